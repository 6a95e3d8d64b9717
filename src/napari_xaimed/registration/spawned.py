"""Run a function in a fresh Python process, polling its log for progress.

ANTs holds the GIL for a whole registration, so a worker thread in napari's process would
freeze the Qt event loop. A new interpreter (``python -m napari_xaimed.registration.spawned``,
not a fork, which would copy Qt's state) runs it instead. ``multiprocessing``'s spawn would
re-import the caller's ``__main__``, which breaks every script without an
``if __name__ == "__main__"`` guard; a plain subprocess has no such trap. The job travels as
``folder/job.json``, arrays as ``.npy`` files in the same folder; the child's stdout and stderr
(where ANTs' C++ code prints) go to ``folder/log.txt``, which the parent reads to report
progress. Closing the generator (a cancel) kills the child.
"""

from __future__ import annotations

import json
import importlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_xaimed._errors import XaimedError
from napari_xaimed._progress import Progress, Steps

JOB = "job.json"
LOG = "log.txt"
ERROR = "error.json"
DONE = "done.json"
POLL_S = 0.05


def _child(target: str, folder: str) -> int:
    """Entry point in the child process: run ``module:function(job, folder)`` and record its
    summary or its error."""
    try:
        job = json.loads(Path(folder, JOB).read_text())
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        summary = getattr(module, func_name)(job, Path(folder))
        Path(folder, DONE).write_text(json.dumps(summary or {}))
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        Path(folder, ERROR).write_text(json.dumps({
            "type": type(exc).__name__,
            "message": str(exc),
            "user_error": isinstance(exc, XaimedError),
            "traceback": traceback.format_exc(),
        }))
        return 1


def run_spawned(target: str, job: dict[str, Any], folder: Path,
                progress: Callable[[str], Progress | None] | None = None,
                what: str = "the job") -> Steps[dict[str, Any]]:
    """Run ``target`` (``"module:function"``) in a spawned process; yield progress until it ends.

    Parameters
    ----------
    target : str
        ``"package.module:function"``; the function takes ``(job, folder)`` and returns a
        JSON-serialisable summary (its arrays it saves into ``folder``).
    job : dict
        JSON-serialisable arguments; ``job["environment"]`` is added to the child's environment.
    folder : pathlib.Path
        An existing folder for the log, inputs and outputs.
    progress : callable, optional
        Turns the log text so far into a :class:`Progress` (None: nothing new to report).
    what : str
        Names the job in error messages.

    Returns
    -------
    dict
        The function's summary.
    """
    (folder / JOB).write_text(json.dumps(job))
    environment = {**os.environ, **{k: str(v) for k, v in job.get("environment", {}).items()}}
    log = folder / LOG
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "napari_xaimed.registration.spawned", target, str(folder)],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
    last: Progress | None = None
    try:
        while process.poll() is None:
            report = None
            if progress is not None and log.exists():
                report = progress(log.read_text(errors="replace"))
            # yield regularly even without news: each yield is a chance to cancel
            last = report or last or Progress(0, 1, f"running {what}")
            yield last
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if (folder / ERROR).exists():
        error = json.loads((folder / ERROR).read_text())
        if error["user_error"]:
            raise XaimedError(error["message"])
        failure = XaimedError(
            f"{what} failed: {error['type']}: {error['message']}. Check that the inputs are "
            "sensible images (not empty, not constant, overlapping in world coordinates)."
        )
        failure.add_note(error["traceback"])
        raise failure
    if not (folder / DONE).exists():
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        raise XaimedError(
            f"{what} stopped without a result (exit code {process.returncode}); the process may "
            f"have run out of memory. Last output: {tail.strip() or 'none'}"
        )
    return json.loads((folder / DONE).read_text())


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
