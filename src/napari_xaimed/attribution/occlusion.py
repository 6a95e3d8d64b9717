"""Occlusion with many occluded volumes per forward pass, reporting progress per batch.

The same definition as Captum's ``Occlusion`` (tested equal): a window slides over the volume
with a stride, starting at 0, with ``ceil((size - window) / stride) + 1`` positions per axis
(the last windows are cut at the border); each voxel's attribution is the mean, over the windows
that cover it, of ``f(x) - f(x with the window set to the baseline)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import TypeVar

import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed.models.device import halved_batch

T = TypeVar("T")


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window position along one axis (Captum's count)."""
    if window > size:
        raise XaimedError(f"the occlusion window ({window} voxels) is larger than the input "
                          f"({size} voxels): use a smaller window.")
    if stride < 1 or (stride > window and size > window):
        raise XaimedError(f"the stride must lie in 1..window ({window}), got {stride}.")
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def window_box(pos: tuple[int, ...], window: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(p, p + w) for p, w in zip(pos, window, strict=True))


def sweep(groups: Iterable[list[T]], position: Callable[[T], tuple[int, ...]],
          scores_of: Callable[[list[T]], torch.Tensor], reference: torch.Tensor,
          shape: tuple[int, ...], window: tuple[int, int, int], n_windows: int,
          batch_size: int, device: torch.device, label: str = "occlusion",
          unchanged: Iterable[tuple[int, ...]] = ()) -> Steps[torch.Tensor]:
    """The loop every occlusion variant shares: score the windows batch by batch (halving the
    batch on out-of-memory), give each window's voxels ``reference - score``, report passes
    done / total, and average over the windows covering each voxel.

    ``groups`` holds lists of items that may share a batch, ``position`` gives an item's
    window start, ``scores_of`` the scores of a batch of items; windows in ``unchanged`` are
    known to leave the score as it is (a zero difference, still counted).
    """
    total = torch.zeros(shape, dtype=torch.float64, device=device)
    count = torch.zeros(shape, dtype=torch.float64, device=device)
    done = 0
    for pos in unchanged:
        count[window_box(pos, window)] += 1
        done += 1
    yield Progress(done, n_windows, f"{label}: {done} of {n_windows} windows")
    batch_size = max(1, int(batch_size))
    for group in groups:
        k = 0
        while k < len(group):
            chunk = group[k:k + batch_size]
            try:
                with torch.no_grad():
                    scores = scores_of(chunk).reshape(-1).double()
            except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                batch_size = halved_batch(exc, batch_size, device)  # retry this chunk
                continue
            for diff, item in zip(reference - scores, chunk, strict=True):
                box = window_box(position(item), window)
                total[box] += diff
                count[box] += 1
            k += len(chunk)
            done += len(chunk)
            yield Progress(done, n_windows, f"{label}: {done} of {n_windows} windows")
    return (total / count.clamp(min=1))[None, None]


def occlusion_steps(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    window: tuple[int, int, int], stride: tuple[int, int, int],
                    baseline: float, batch_size: int) -> Steps[torch.Tensor]:
    """Occlusion attributions of ``x`` ``(1, C, z, y, x)``; ``forward`` maps a batch to one
    score per volume ``(n,)``. Yields progress per batch (passes done / total)."""
    shape = tuple(x.shape[2:])
    starts = [window_starts(n, w, s) for n, w, s in zip(shape, window, stride, strict=True)]
    positions = list(itertools.product(*starts))
    with torch.no_grad():
        reference = forward(x).reshape(-1)[0].double()

    def scores_of(chunk: list[tuple[int, ...]]) -> torch.Tensor:
        batch = x.repeat(len(chunk), 1, 1, 1, 1)
        for i, pos in enumerate(chunk):
            batch[(i, slice(None), *window_box(pos, window))] = baseline
        return forward(batch)

    return (yield from sweep([positions], lambda pos: pos, scores_of, reference, shape,
                             window, len(positions), batch_size, x.device))
