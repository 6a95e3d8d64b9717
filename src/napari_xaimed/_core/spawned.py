"""Run a function in a fresh Python process, polling its log for progress.

ANTs holds the GIL for a whole registration, so a worker thread in napari's process would
freeze the Qt event loop, and a thread cannot be stopped halfway. A new interpreter
(``python -P -m napari_xaimed._core.spawned``, not a fork, which would copy Qt's state)
runs it instead. ``multiprocessing``'s spawn would re-import the caller's ``__main__``, which breaks
every script without an ``if __name__ == "__main__"`` guard; a plain subprocess has no such trap.

Protocol: the child imports a *preload* module, or calls a ``"module:function"`` preload
(for ANTs: ~1-3 s), then reads one JSON line on
stdin, ``{"target": "module:function", "folder": ...}``, sends its stdout and stderr (where
ANTs' C++ code prints) to ``folder/log.txt``, runs ``function(job, folder)`` with the job from
``folder/job.json`` and writes ``done.json`` or ``error.json``. Arrays travel as ``.npy`` files
in the folder. Because the import comes before the request, a child can be started ahead of
time (:func:`prewarm`, which the registration widget does when it opens) and the import is
off the clock when the user presses Register. Closing the generator (a cancel) kills the child.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps

JOB = "job.json"
LOG = "log.txt"
ERROR = "error.json"
DONE = "done.json"
POLL_S = 0.05

# Started children waiting for a request, by (preload module, environment); and the ones
# running a job, so that none outlives the program.
_WARM: dict[tuple[str, tuple[tuple[str, str], ...]], subprocess.Popen] = {}
_RUNNING: set[subprocess.Popen] = set()


def _write_error(folder: str, exc: BaseException) -> None:
    Path(folder, ERROR).write_text(json.dumps({
        "type": type(exc).__name__,
        "message": str(exc),
        "user_error": isinstance(exc, XaimedError),
        "traceback": traceback.format_exc(),
    }))


def _child(preload: str) -> int:
    """Entry point of the child: preload, wait for the request, run it, record the outcome."""
    try:
        module_name, _, function = preload.partition(":")
        module = importlib.import_module(module_name)
        if function:
            getattr(module, function)()
        failed: BaseException | None = None
    except BaseException as exc:  # noqa: BLE001 - reported once there is a folder to report to
        failed = exc
    line = sys.stdin.readline()
    if not line:  # the parent went away or dropped a warm child
        return 0
    request = json.loads(line)
    folder = request["folder"]
    log = os.open(os.path.join(folder, LOG), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        if failed is not None:
            raise failed
        job = json.loads(Path(folder, JOB).read_text())
        module_name, func_name = request["target"].split(":")
        summary = getattr(importlib.import_module(module_name), func_name)(job, Path(folder))
        # written under another name, then renamed: the parent never reads half a file
        Path(folder, DONE + ".part").write_text(json.dumps(summary or {}))
        os.replace(Path(folder, DONE + ".part"), Path(folder, DONE))
        return 0
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
        _write_error(folder, exc)
        return 1


def _key(preload: str, environment: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return preload, tuple(sorted((k, str(v)) for k, v in environment.items()))


def _start(preload: str, environment: dict[str, Any]) -> subprocess.Popen:
    env = {**os.environ, **{k: str(v) for k, v in environment.items()}}
    # What the child writes before it has a job folder (an interpreter that cannot import the
    # package, say) lands here, so a failure to start can be told from running out of memory.
    errors = tempfile.TemporaryFile()
    # -P: ``-m`` would otherwise put the working folder first on sys.path, and a numpy.py (or
    # any module's namesake) in the folder napari was launched from would run in the child.
    # Not -I, which would also drop PYTHONPATH and the user site, where the package may live.
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "napari_xaimed._core.spawned", preload],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=env)
    process.early_errors = errors  # type: ignore[attr-defined]
    return process


def _early_errors(process: subprocess.Popen) -> str:
    """The last lines the child wrote to stderr before it had a job folder."""
    errors = getattr(process, "early_errors", None)
    if errors is None:
        return ""
    try:
        errors.seek(0)
        text = errors.read().decode(errors="replace")
    finally:
        errors.close()
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(line.strip() for line in lines[-3:])


def prewarm(preload: str, environment: dict[str, Any] | None = None) -> None:
    """Start a child that imports ``preload`` now and waits for the next matching job."""
    key = _key(preload, environment or {})
    process = _WARM.get(key)
    if process is None or process.poll() is not None:
        _WARM[key] = _start(preload, environment or {})


@atexit.register
def _drop_warm() -> None:
    for process in [*_WARM.values(), *_RUNNING]:
        if process.poll() is None:
            process.kill()
    _WARM.clear()
    _RUNNING.clear()


def run_spawned(target: str, job: dict[str, Any], folder: Path, *, preload: str | None = None,
                progress: Callable[[str], Progress | None] | None = None,
                what: str = "the job") -> Steps[dict[str, Any]]:
    """Run ``target`` (``"module:function"``) in a child process; yield progress until it ends.

    Parameters
    ----------
    target : str
        ``"package.module:function"``; the function takes ``(job, folder)`` and returns a
        JSON-serialisable summary (its arrays it saves into ``folder``).
    job : dict
        JSON-serialisable arguments; ``job["environment"]`` is added to the child's environment
        before anything is imported.
    folder : pathlib.Path
        An existing folder for the log, inputs and outputs.
    preload : str, optional
        Module the child imports before the request (default: the target's module); a child
        :func:`prewarm`-ed with the same preload and environment is used when there is one.
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
    environment = job.get("environment", {})
    preload = preload or target.split(":")[0]
    request = (json.dumps({"target": target, "folder": str(folder)}) + "\n").encode()
    process = _WARM.pop(_key(preload, environment), None)
    try:
        if process is None or process.poll() is not None:
            raise BrokenPipeError
        process.stdin.write(request)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):  # no warm child, or it died meanwhile: a fresh one
        process = _start(preload, environment)
        process.stdin.write(request)  # type: ignore[union-attr]
        process.stdin.close()  # type: ignore[union-attr]
    log = folder / LOG
    last: Progress | None = None
    _RUNNING.add(process)
    try:
        # done.json comes last, once the outputs are saved: no need to wait for the child's
        # interpreter to shut down (a few hundred ms with ANTs loaded)
        while process.poll() is None and not (folder / DONE).exists():
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
        _RUNNING.discard(process)
        early = _early_errors(process)
    if (folder / ERROR).exists():
        error = json.loads((folder / ERROR).read_text())
        if error["user_error"]:
            raise XaimedError(error["message"])
        tail = [line for line in log.read_text(errors="replace").splitlines()
                if line.strip() and "DIAGNOSTIC" not in line][-6:] if log.exists() else []
        failure = XaimedError(
            f"{what} failed: {error['type']}: {error['message']}. Check that the inputs are "
            "sensible images (not empty, not constant, overlapping in world coordinates)."
            + (" Its last output: " + " | ".join(t.strip() for t in tail) if tail else "")
        )
        failure.add_note(error["traceback"])
        raise failure
    if not (folder / DONE).exists():
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        if early and not tail.strip():
            raise XaimedError(
                f"{what} could not start its process (exit code {process.returncode}): {early}. "
                "The Python that runs napari must be able to import napari_xaimed and ants "
                "(check the installation in this environment).")
        cause = ("it was killed, most likely for lack of memory" if process.returncode in
                 (-9, 137) else "the process may have run out of memory")
        raise XaimedError(
            f"{what} stopped without a result (exit code {process.returncode}); {cause}. "
            f"Last output: {tail.strip() or early or 'none'}"
        )
    return json.loads((folder / DONE).read_text())


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
