"""The pieces of the truth metrics that the in-memory scores (:mod:`.truth_metrics`) and the
slab-by-slab ones (:mod:`.truth_lazy`) share: shape and mask checks, the top-k count and the
share at a cut, and the pointing game's reach around a peak."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing


def _check_shapes(heat_shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> None:
    if len(heat_shape) != 3:
        raise XaimedError(f"the heatmap must be 3D (z, y, x), got shape {heat_shape}.")
    if mask_shape != heat_shape:
        raise XaimedError(f"the mask {mask_shape} and the heatmap {heat_shape} differ in "
                          "shape: resample one onto the other's grid first.")


def _check_inside(n_inside: int, size: int, needs_outside: bool) -> None:
    if n_inside == 0:
        raise XaimedError("the mask is empty: nothing to compare the heatmap with.")
    if needs_outside and n_inside == size:
        raise XaimedError("the mask covers the whole volume: there is no outside to compare "
                          "with.")


def _top_count(k: int | float, n: int) -> int:
    """How many voxels ``k`` means in a volume of ``n``: a fraction (float) or a count."""
    if isinstance(k, float | np.floating):
        if not 0 < float(k) <= 1:
            raise XaimedError(f"k as a fraction of the voxels must lie in (0, 1], got {k}; "
                              "give an int for a number of voxels.")
        return max(1, int(round(float(k) * n)))
    count = int(k)
    if not 1 <= count <= n:
        raise XaimedError(f"k must be between 1 and the number of voxels ({n}), got {k}.")
    return count


def _cut_share(count: int, n_above: int, hits_above: int, n_at: int, hits_at: int) -> float:
    """:func:`_top_share` from its counts: voxels above the cut and at it, all and inside."""
    hits = float(hits_above)
    hits += (count - n_above) * hits_at / n_at
    return hits / count


def _reach(spacing: Any, tolerance_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The spacing as an array and the tolerance in whole voxels per axis."""
    spacing_arr = np.asarray(as_spacing(spacing), dtype=np.float64)
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise XaimedError(f"tolerance_mm must be a number >= 0, got {tolerance_mm}.")
    return spacing_arr, np.floor(tolerance_mm / spacing_arr + 1e-9).astype(int)


def _peaks_near(peaks: np.ndarray, truth: np.ndarray, reach: np.ndarray,
                spacing_arr: np.ndarray, tolerance_mm: float, start: int = 0, z0: int = 0
                ) -> int:
    """How many of the ``peaks`` lie within the tolerance of a mask voxel.

    ``peaks`` (boolean) holds the volume's planes from ``start`` on, ``truth`` the mask's
    planes from ``z0`` on: at least those within ``reach`` of the peaks' planes, or up to the
    volume's ends (all planes of both by default). Distances are lengths of integer voxel
    offsets (:func:`~napari_xaimed.evaluation.lattice.nearest_offsets`), the nearest mask voxel
    of a peak outside the mask being one of the mask's border voxels.
    """
    from napari_xaimed.evaluation.distances import surface
    from napari_xaimed.evaluation.lattice import nearest_offsets

    shift = start - z0  # a peak plane's index in ``truth``
    own = truth[shift:shift + peaks.shape[0]]
    hits = int(np.count_nonzero(peaks & own))
    box = _box(truth)
    if not reach.any() or box is None:  # no voxel but the peak itself lies within reach
        return hits
    # peaks outside the mask that may lie within reach of it: inside the mask's box + reach
    lo = np.maximum(np.array([b.start for b in box]) - reach - [shift, 0, 0], 0)
    hi = np.minimum(np.array([b.stop for b in box]) + reach - [shift, 0, 0], peaks.shape)
    if np.any(hi <= lo):
        return hits
    near = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    away = np.argwhere(peaks[near] & ~own[near]) + lo + [shift, 0, 0]
    if not len(away):
        return hits
    border = np.argwhere(surface(truth[box])) + [b.start for b in box]
    lengths = nearest_offsets(away, border, spacing_arr)[1]
    return hits + int(np.count_nonzero(lengths <= tolerance_mm + 1e-9))


def _box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of a mask's voxels (None when it has none)."""
    spans = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(hit):
            return None
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(spans)
