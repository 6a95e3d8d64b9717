"""Occlusion with many occluded volumes per forward pass, reporting progress per batch.

The same definition as Captum's ``Occlusion`` (tested equal): a window slides over the volume
with a stride, starting at 0, with ``ceil((size - window) / stride) + 1`` positions per axis
(the last windows are cut at the border); each voxel's attribution is the mean, over the windows
that cover it, of ``f(x) - f(x with the window set to the baseline)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from napari_xaimed._errors import XaimedError
from napari_xaimed._progress import Progress, Steps
from napari_xaimed.attribution.device import is_out_of_memory, out_of_memory_error


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start of each window position along one axis (Captum's count)."""
    if window > size:
        raise XaimedError(f"the occlusion window ({window} voxels) is larger than the input "
                          f"({size} voxels): use a smaller window.")
    if stride < 1 or (stride > window and size > window):
        raise XaimedError(f"the stride must lie in 1..window ({window}), got {stride}.")
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


def occlusion_steps(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    window: tuple[int, int, int], stride: tuple[int, int, int],
                    baseline: float, batch_size: int) -> Steps[torch.Tensor]:
    """Occlusion attributions of ``x`` ``(1, C, z, y, x)``; ``forward`` maps a batch to one
    score per volume ``(n,)``. Yields progress per batch (passes done / total)."""
    shape = x.shape[2:]
    starts = [window_starts(n, w, s) for n, w, s in zip(shape, window, stride, strict=True)]
    positions = list(itertools.product(*starts))
    total = torch.zeros(shape, dtype=torch.float64, device=x.device)
    count = torch.zeros(shape, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        reference = forward(x).reshape(-1)[0].double()
    batch_size = max(1, int(batch_size))
    done = 0
    yield Progress(0, len(positions), f"occlusion: 0 of {len(positions)} windows")
    while done < len(positions):
        chunk = positions[done:done + batch_size]
        batch = x.repeat(len(chunk), 1, 1, 1, 1)
        boxes = [tuple(slice(p, p + w) for p, w in zip(pos, window, strict=True))
                 for pos in chunk]
        for i, box in enumerate(boxes):
            batch[(i, slice(None), *box)] = baseline
        try:
            with torch.no_grad():
                scores = forward(batch).reshape(-1).double()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            del batch
            if batch_size == 1:
                raise out_of_memory_error(x.device) from exc
            batch_size = max(1, batch_size // 2)  # halve and retry this chunk
            if x.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        diffs = reference - scores
        for diff, box in zip(diffs, boxes, strict=True):
            total[box] += diff
            count[box] += 1
        done += len(chunk)
        yield Progress(done, len(positions), f"occlusion: {done} of {len(positions)} windows")
    return (total / count.clamp(min=1))[None, None]
