"""Running one job off the GUI thread: Run/Cancel buttons, a progress bar, errors as notifications.

Every widget uses :class:`JobPanel`, so progress, cancel and error handling behave the same
everywhere. A job is a step generator from the core (see ``napari_xaimed._core.progress``): napari's
generator worker runs it in a thread, each yielded :class:`Progress` moves the bars, and cancel
stops it between steps. Results reach the widget only through ``on_result``, called on the GUI
thread after the job finished, so a cancelled or failed job never leaves half-made layers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from napari_xaimed._core.errors import UntrustedModelError, XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed.viewer.widgets._mismatch import GridMismatch, offers
from napari_xaimed.viewer.widgets._results import wrapping
from napari_xaimed.viewer.widgets._scratch import release

log = logging.getLogger(__name__)


class _QuietCollector:
    """Keeps the cyclic garbage collector's full passes short while jobs run.

    A napari session holds a few hundred thousand objects (napari, Qt, torch). A full (oldest
    generation) collection walks all of them, about 150 ms on these machines, holding the
    interpreter lock: a job that allocates many small objects (the window plans of incremental
    occlusion) set one off and froze the viewer for 0.2-0.3 s. While any job runs, the objects
    that existed when it started are frozen (``gc.freeze``), so collections walk only what is
    new; when the last job ends they are unfrozen, so nothing stays out of reach of the
    collector (a layer deleted later is still freed).
    """

    def __init__(self) -> None:
        self._running = 0

    def enter(self) -> None:
        import gc

        self._running += 1
        if self._running == 1:
            gc.freeze()

    def leave(self) -> None:
        import gc

        self._running = max(0, self._running - 1)
        if self._running == 0:
            gc.unfreeze()


QUIET_COLLECTOR = _QuietCollector()  # GUI thread only: JobPanel.start and _on_finished


class _Cancelled:
    """What a job cancelled in its worker thread returns instead of a result."""


CANCELLED = _Cancelled()


#: Shortest time between two progress updates sent to the GUI thread.
PROGRESS_INTERVAL_S = 0.02


def _drive(steps: Generator[Progress, None, Any],
           stop: threading.Event) -> Generator[Progress, None, Any]:
    """Run ``steps``; once ``stop`` is set, close them at their next yield and return
    :data:`CANCELLED`. The close runs in the worker thread, where the steps ran: their cleanup
    may have to (the model segmentation's greenlet can only be unwound in its own thread;
    unwound from the GUI thread it crashed the next run).

    Steps that come faster than :data:`PROGRESS_INTERVAL_S` are not passed on (the next one
    passed on carries the newer count; the last one is always passed on): each is a queued
    signal the GUI thread must handle, and a job stepping every few microseconds queued them
    faster than the GUI handled them, so the viewer lagged and other jobs' signals waited
    behind them. ``stop`` is still checked at every step."""
    last = float("-inf")
    held: Progress | None = None
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as done:
                if held is not None:
                    yield held
                return done.value
            now = time.monotonic()
            if now - last >= PROGRESS_INTERVAL_S:
                last, held = now, None
                yield step
            else:
                held = step
            if stop.is_set():
                return CANCELLED
    finally:
        steps.close()


def report_error(exc: BaseException) -> str:
    """Show an exception as a napari notification and return the text shown.

    A :class:`XaimedError` already says what to fix; anything else is a bug or an environment
    problem, so its type is shown and the traceback goes to the log. A
    :class:`~napari_xaimed.viewer.widgets._mismatch.GridMismatch` is also offered to the docks,
    which show a button that resamples the layer onto the reference grid.
    """
    from napari.utils.notifications import show_error

    if isinstance(exc, XaimedError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
        log.error("napari-xaimed job failed", exc_info=(type(exc), exc, exc.__traceback__))
    show_error(text)
    if isinstance(exc, GridMismatch):
        offers().offered.emit(exc)
    return text


def show_warning(args: tuple) -> None:
    """A warning raised in a job's thread (``worker.warned``: ``warnings.showwarning``'s
    arguments) as a napari notification. napari's workers mean to relay them, but in napari
    0.9 the relay is never connected, so a model's out-of-distribution warning went unseen."""
    from napari.utils.notifications import notification_manager

    notification_manager.receive_warning(*args)


class JobPanel(QWidget):
    """Run and Cancel buttons with a progress bar and a status line, for one job at a time.

    Signals
    -------
    finished(str)
        Emitted once per job with its outcome: ``"done"``, ``"failed"``, ``"cancelled"``, or
        ``"untrusted"`` (a model file's code was refused; the user is asked next).
    """

    finished = Signal(str)

    def __init__(self, run_text: str = "Run", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = wrapping(QLabel(""))
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        self._quiet = False
        self.cancel_button.clicked.connect(self.cancel)
        self.worker: Any = None
        self._pbar: Any = None
        self._steps: Generator[Progress, None, Any] | None = None
        self._stop = threading.Event()
        self._outcome = ""
        self._scratch: Path | None = None
        self._retry_trusted: Callable[[UntrustedModelError], None] | None = None
        self._refused: UntrustedModelError | None = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        steps: Generator[Progress, None, Any],
        on_result: Callable[[Any, float], None],
        description: str,
        scratch: Path | None = None,
        retry_trusted: Callable[[UntrustedModelError], None] | None = None,
    ) -> None:
        """Run ``steps`` in a worker thread; call ``on_result(result, seconds)`` when it ends well.

        ``scratch``, a folder from :func:`~napari_xaimed.viewer.widgets._scratch.scratch_folder`
        that the job fills, is deleted when the job fails or is cancelled (``on_result`` ties it to
        the layers it shows). ``retry_trusted``: when the job fails because a model file names
        code (:class:`~napari_xaimed._core.errors.UntrustedModelError`), the user is shown that code
        (:func:`~napari_xaimed.viewer.widgets._trust.ask_trust`) and Yes calls it with the refusal
        (it runs the job again, that file with ``trust=True``); No leaves everything as it
        was.
        """
        from napari.qt.threading import create_worker
        from napari.utils import progress

        if self.running:
            return
        self._outcome = ""
        self._steps = steps
        self._scratch = scratch
        self._retry_trusted, self._refused = retry_trusted, None
        started = time.perf_counter()
        self._stop = threading.Event()
        worker = create_worker(_drive, steps, self._stop, _start_thread=False,
                               _ignore_errors=True)
        self._pbar = progress(total=0, desc=description)
        self.worker = worker

        def returned(result: Any) -> None:
            if result is CANCELLED:
                self._on_aborted()
                return
            try:
                on_result(result, time.perf_counter() - started)
            except Exception as exc:  # layer creation failed: still a clean end for the panel
                self._fail(exc)
                return
            self._outcome = "done"
            self._full()
            self.status.setText(f"{description}: done in {time.perf_counter() - started:.1f} s")

        worker.yielded.connect(self._on_progress)
        worker.returned.connect(returned)
        worker.errored.connect(self._fail)
        worker.warned.connect(show_warning)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar.setRange(0, 0)  # busy until the first step reports its total
        self.status.setText(f"{description}…")
        QUIET_COLLECTOR.enter()
        self._quiet = True
        worker.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next step; nothing it made is added."""
        if self.worker is not None:
            self.status.setText("Cancelling…")
            self.cancel_button.setEnabled(False)
            self._stop.set()  # the worker closes the job at its next step, in its own thread

    def _on_progress(self, step: Any) -> None:
        if not isinstance(step, Progress):
            return
        total = max(step.total, 1)
        self.bar.setRange(0, total)
        self.bar.setValue(min(step.done, total))
        if step.message:
            self.status.setText(step.message)
        pbar = self._pbar  # napari's bar may process events, and the job may finish meanwhile
        if pbar is not None:
            pbar.total = total
            pbar.update(step.done - pbar.n)
            if step.message:
                pbar.set_description(step.message)

    def _full(self) -> None:
        """The bar at 100 %: a job's last step reports the work before it (``done`` < ``total``),
        and a job with no steps left the bar busy, so a finished job looked unfinished."""
        total = max(self.bar.maximum(), 1)
        self.bar.setRange(0, total)
        self.bar.setValue(total)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, UntrustedModelError) and self._retry_trusted is not None:
            self._outcome, self._refused = "untrusted", exc  # asked once the job has ended
            self.status.setText(f"{Path(exc.source).name} names code to run: asking…")
            return
        self._outcome = "failed"
        self.status.setText(f"Failed: {report_error(exc)}")

    def _on_aborted(self) -> None:
        self._outcome = "cancelled"
        self.status.setText("Cancelled: nothing was added.")

    def _on_finished(self) -> None:
        # A cancelled job's steps were closed in the worker thread (see _drive), which ran
        # their cleanup: a spawned ANTs process killed, its temporary folder removed. This
        # close is a fallback for a worker stopped otherwise; a closed generator ignores it.
        if self._steps is not None:
            try:
                self._steps.close()
            except Exception:  # a cleanup that fails must not leave the panel stuck
                log.exception("napari-xaimed job cleanup failed")
            self._steps = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        if self._quiet:
            QUIET_COLLECTOR.leave()
            self._quiet = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self._outcome != "done":
            release(self._scratch)  # a half-written store is not kept
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        self._scratch = None
        self.finished.emit(self._outcome or "cancelled")
        refused, retry = self._refused, self._retry_trusted
        self._refused = self._retry_trusted = None
        if refused is not None and retry is not None:
            from napari_xaimed.viewer.widgets import _trust

            if _trust.ask_trust(self, refused):
                retry(refused)
            else:
                self.status.setText(f"Not run: {Path(refused.source).name} was not trusted; "
                                    "nothing was added.")
