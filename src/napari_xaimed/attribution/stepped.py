"""Progress and cancel inside one library call that runs many forward passes.

Some Captum methods (VarGrad's noise tunnel, Shapley value sampling) batch their forward passes
inside a single ``attribute`` call, with no hook between batches. :func:`stepped` runs such a
call in a greenlet (a coroutine in the same thread) and hands it a forward function that
switches back to the step generator after every batch: the generator yields the progress, and
closing it (a cancel) unwinds the call right there. The result is the library's own, unchanged.

Grad mode is per thread, so a call that runs under ``torch.no_grad()`` would leave it off for
the generator's caller between batches: it is switched back and forth with the greenlet.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import greenlet
import torch

from napari_xaimed._progress import Progress, Steps


def stepped(call: Callable[[Callable[[torch.Tensor], Any]], Any],
            forward: Callable[[torch.Tensor], Any], total: int, label: str) -> Steps[Any]:
    """Run ``call(counting_forward)`` with progress per forward batch.

    Parameters
    ----------
    call : callable
        Takes the forward function to use and returns the result (e.g. a Captum
        ``attribute`` call built around it).
    forward : callable
        The model's forward on a batch.
    total : int
        Volumes the call will evaluate (for the progress bar; the count is clamped to it).
    label : str
        Start of the progress messages.

    Returns
    -------
    The call's result.
    """
    def counting(batch: torch.Tensor) -> Any:
        out = forward(batch)
        greenlet.getcurrent().parent.switch(("batch", int(batch.shape[0])))
        return out

    outer = torch.is_grad_enabled()
    task = greenlet.greenlet(lambda: ("done", call(counting)))
    done = 0
    try:
        kind, value = task.switch()
        while kind == "batch":
            inner = torch.is_grad_enabled()
            torch.set_grad_enabled(outer)
            done += value
            yield Progress(min(done, total), total,
                           f"{label}: {min(done, total)} of {total} volumes")
            torch.set_grad_enabled(inner)
            kind, value = task.switch()
        return value
    finally:
        if not task.dead:  # closed at a yield (a cancel): unwind the library call now
            task.throw(greenlet.GreenletExit)
        torch.set_grad_enabled(outer)
