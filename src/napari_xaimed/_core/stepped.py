"""Progress and cancel inside one library call that runs many forward passes.

Some library calls batch their forward passes inside a single call, with no hook between
batches: Captum's VarGrad (noise tunnel) and Shapley value sampling, MONAI's
``sliding_window_inference``. :func:`stepped` runs such a call in a greenlet (a coroutine in
the same thread) and hands it a forward function that switches back to the step generator
after a batch: the generator yields the progress, and closing it (a cancel) unwinds the call
right there. The result is the library's own, unchanged.

A greenlet rather than a thread: with OpenMP's default waiting, torch work in a second thread
runs 10-60% slower on a small machine while the first thread's OpenMP workers spin (measured in
``benchmarks/bench_segmentation.py``), and per-thread state (grad mode, autocast) needs no
hand-over. Grad mode is still per thread, so a call that runs under ``torch.no_grad()`` would
leave it off for the generator's caller between batches: it is switched back and forth with the
greenlet.

A greenlet belongs to the thread that started it: the generator must be resumed, and closed,
from the thread that started it (as napari's workers and scripts do). Closed from another
thread, the unwinding raises there and the call is left half-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import greenlet
import torch

from napari_xaimed._core.progress import Progress, Steps


def stepped(call: Callable[[Callable[[torch.Tensor], Any]], Any],
            forward: Callable[[torch.Tensor], Any], total: int, label: str, *,
            interval_s: float = 0.0,
            report: Callable[[int], Progress] | None = None) -> Steps[Any]:
    """Run ``call(counting_forward)`` with progress per forward batch.

    Parameters
    ----------
    call : callable
        Takes the forward function to use and returns the result (e.g. a Captum
        ``attribute`` call, or MONAI's ``sliding_window_inference``, built around it).
    forward : callable
        The model's forward on a batch (dimension 0 counts the volumes).
    total : int
        Volumes the call will evaluate (for the progress bar; the count is clamped to it).
    label : str
        Start of the default progress messages, ``"<label>: <done> of <total> volumes"``.
    interval_s : float
        Hand over (yield progress, and so give a cancel its chance) after the first batch and
        then after the first batch that ends at least this many seconds after the last
        hand-over; faster batches run on unreported. 0 (default): after every batch.
    report : callable, optional
        Makes the :class:`Progress` to yield from the volumes done so far (clamped to
        ``total``), in place of the default.

    Returns
    -------
    The call's result.
    """
    if report is None:
        def report(done: int) -> Progress:
            return Progress(done, total, f"{label}: {done} of {total} volumes")

    done = 0
    reported: float | None = None

    def counting(batch: torch.Tensor) -> Any:
        nonlocal done, reported
        out = forward(batch)
        done += int(batch.shape[0])
        if reported is not None and time.perf_counter() - reported < interval_s:
            return out
        greenlet.getcurrent().parent.switch(("batch", done))
        reported = time.perf_counter()
        return out

    outer = torch.is_grad_enabled()
    task = greenlet.greenlet(lambda: ("done", call(counting)))
    try:
        kind, value = task.switch()
        while kind == "batch":
            inner = torch.is_grad_enabled()
            torch.set_grad_enabled(outer)
            yield report(min(value, total))
            torch.set_grad_enabled(inner)
            kind, value = task.switch()
        return value
    finally:
        if not task.dead:  # closed at a yield (a cancel): unwind the library call now
            task.throw(greenlet.GreenletExit)
        torch.set_grad_enabled(outer)
