"""Explanation metrics against a mask, and relevance by region, on volumes larger than memory.

:func:`truth_scores_lazy` gives the values of :func:`~napari_xaimed.explanations.truth_metrics.
truth_scores` and :func:`relevance_by_region_lazy` the table of :func:`~napari_xaimed.
attribution.regions.relevance_by_region` (equal up to float rounding, ~1e-15 relative) for a
heatmap and a mask or label map given as dask, zarr or numpy arrays, read one slab of planes
along z at a time. Both are also reached through the in-memory functions, which hand a dask
input over to them.

Memory: one slab of planes (of the heatmap in float64, and of the mask) at a time, plus

- for the top-k share and the rank accuracy, the ``count`` largest values seen so far (or the
  ``voxels - count + 1`` smallest, whichever is fewer), which fix the cut exactly;
- for the AUROC, the values of the smaller side (inside or outside the mask), sorted: each
  value of the other side is then placed among them by binary search, which counts the pairs
  it wins and ties (Mann-Whitney U, ties half, as the rank version);
- for the pointing game, the mask's planes within the tolerance of a slab holding voxels tied
  for the maximum (each slab's share of them near the mask is counted).

So a small mask keeps memory near one slab; a mask of half the volume holds half its values
(8 bytes each) for the AUROC. Three passes read the volume: sums, extremes and the top-k cut;
the rank cut and the held side; the counts at the cuts, the AUROC and the peaks.

:func:`~napari_xaimed.explanations.regions.reference_agreement` ranks every voxel of two maps
(Spearman), which no bounded pass reproduces: it refuses lazy inputs (compare on an
in-memory crop).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.explanations.region_table import (
    _check_finite,
    _check_heat_type,
    _check_label_range,
    _check_labels_shape,
    _check_whole,
    _labels_whole,
    _region_table,
)
from napari_xaimed.explanations.truth_core import (
    _check_inside,
    _check_shapes,
    _cut_share,
    _peaks_near,
    _reach,
    _top_count,
)
from napari_xaimed.io.lazy import chunks_of, read_slab, slab_size, z_slabs


def _slab(array: Any, slab: int | None) -> int:
    """Planes per slab: ``slab`` if given, else about 64 MB of the array in float64."""
    if slab is not None:
        return max(1, int(slab))
    return slab_size(tuple(np.shape(array)), 8, chunks_of(array))


class _KthLargest:
    """The ``count``-th largest of ``n`` values seen a slab at a time, holding at most
    ``min(count, n - count + 1)`` of them: the largest so far, or the smallest so far."""

    def __init__(self, count: int, n: int) -> None:
        self.top = count <= n - count + 1
        self.keep = count if self.top else n - count + 1
        self.held = np.empty(0, np.float64)
        self.edge = 0.0  # the held values' smallest (largest) once ``keep`` are held

    def add(self, values: np.ndarray) -> None:
        if self.held.size >= self.keep:  # only values beyond the edge can enter
            values = values[values > self.edge] if self.top else values[values < self.edge]
            if not values.size:
                return
        both = np.concatenate([self.held, values]) if self.held.size else values
        if both.size > self.keep:
            at = both.size - self.keep if self.top else self.keep - 1
            both = np.partition(both, at)
            both = both[at:] if self.top else both[:self.keep]
        self.held = both.copy()  # not a view that keeps a whole slab alive
        if both.size >= self.keep:
            self.edge = float(both.min() if self.top else both.max())

    @property
    def value(self) -> float:
        """The ``count``-th largest, once all ``n`` values were added."""
        return float(self.held.min() if self.top else self.held.max())


def _cut_counts(heat: np.ndarray, inside: np.ndarray, cut: float) -> list[int]:
    """Voxels above ``cut``, of them inside, voxels at it, of them inside."""
    above, at = heat > cut, heat == cut
    return [int(np.count_nonzero(found)) for found in (above, above & inside, at, at & inside)]


def _pairs(held: np.ndarray, values: np.ndarray, chosen: np.ndarray,
           piece: int = 2**15) -> int:
    """Sum over the ``chosen`` ``values`` of how many ``held`` (sorted) values lie below them
    plus how many lie below or at them; in pieces, each sorted so that the binary searches
    walk ``held`` in order (several times faster on a large ``held``)."""
    total = 0
    for start in range(0, values.size, piece):
        part = values[start:start + piece][chosen[start:start + piece]]
        part.sort()
        for side in ("left", "right"):
            total += int(np.searchsorted(held, part, side).sum())
    return total


def truth_scores_steps(heatmap: Any, mask: Any, *, spacing: Any = None,
                       tolerance_mm: float = 0.0, k: int | float = 0.01,
                       slab: int | None = None) -> Steps[dict[str, float]]:
    """:func:`truth_scores_lazy` as steps: yields :class:`~napari_xaimed._core.progress.Progress`
    per slab read, returns the scores."""
    shape = tuple(int(n) for n in np.shape(heatmap))
    _check_shapes(shape, tuple(int(n) for n in np.shape(mask)))
    n = int(np.prod(shape))
    spacing_arr, reach = _reach(spacing, tolerance_mm)
    count_k = _top_count(k, n)
    bounds = list(z_slabs(shape[0], _slab(heatmap, slab)))
    total = 3 * len(bounds)

    def slabs(step: int, message: str):
        for i, (start, stop) in enumerate(bounds):
            yield Progress(step * len(bounds) + i, total, message)
            # no names kept here: a slab lives only while the loop below works on it
            yield (start, stop, read_slab(heatmap, start, stop).astype(np.float64, copy=False),
                   read_slab(mask, start, stop).astype(bool, copy=False))

    # pass 1: checks, relevance mass, extremes, the top-k cut
    n_in, pos_total, pos_in = 0, 0.0, 0.0
    high, low = -np.inf, np.inf
    top_k = _KthLargest(count_k, n)
    for item in slabs(0, "summing the heatmap"):
        if isinstance(item, Progress):
            yield item
            continue
        _, _, heat, inside = item
        _check_finite(bool(np.all(np.isfinite(heat))))
        n_in += int(np.count_nonzero(inside))
        positive = heat > 0
        pos_total += float(np.sum(heat, where=positive))
        pos_in += float(np.sum(heat, where=positive & inside))
        del positive
        high, low = max(high, float(heat.max())), min(low, float(heat.min()))
        top_k.add(heat.ravel())
        del item, heat, inside  # before the next slab is read
    _check_inside(n_in, n, needs_outside=False)
    _check_inside(n_in, n, needs_outside=True)  # the AUROC's refusal, as truth_scores gives
    n_out = n - n_in

    # pass 2: the rank cut (the |mask|-th largest) and the smaller side's values for the AUROC
    hold_inside = n_in <= n_out
    held = np.empty(n_in if hold_inside else n_out, np.float64)
    filled = 0
    rank = _KthLargest(n_in, n)
    for item in slabs(1, "finding the most relevant voxels"):
        if isinstance(item, Progress):
            yield item
            continue
        _, _, heat, inside = item
        rank.add(heat.ravel())
        side = inside if hold_inside else ~inside
        size = int(np.count_nonzero(side))
        np.compress(side.ravel(), heat.ravel(), out=held[filled:filled + size])
        filled += size
        del item, heat, inside  # before the next slab is read
    held.sort()

    # pass 3: counts at both cuts, the AUROC's pairs, the peaks near the mask
    cuts = {"rank": rank.value, "top_k": top_k.value}
    counts = {key: [0, 0, 0, 0] for key in cuts}  # above, above inside, at, at inside
    pairs = 0  # sum over the other side of (#held below) + (#held below or equal)
    n_peaks = n_hits = 0  # voxels holding the maximum, and those near the mask
    for item in slabs(2, "counting"):
        if isinstance(item, Progress):
            yield item
            continue
        start, stop, heat, inside = item
        for key, cut in cuts.items():
            counts[key] = [a + b for a, b in zip(counts[key], _cut_counts(heat, inside, cut),
                                                 strict=True)]
        pairs += _pairs(held, heat.ravel(), inside.ravel() != hold_inside)
        if low != high:
            peaks = heat == high
            found = int(np.count_nonzero(peaks))
            if found:
                lo = max(start - int(reach[0]), 0)
                hi = min(stop + int(reach[0]), shape[0])
                near = inside if (lo, hi) == (start, stop) else read_slab(mask, lo, hi).astype(
                    bool, copy=False)
                n_peaks += found
                n_hits += _peaks_near(peaks, near, reach, spacing_arr, tolerance_mm,
                                      start=start, z0=lo)
                del near
            del peaks
        del item, heat, inside  # before the next slab is read
    # pairs won count twice and ties once: 2 U, an exact integer
    two_u = 2 * n_in * n_out - pairs if hold_inside else pairs
    above, above_in, at, at_in = counts["rank"]
    k_above, k_above_in, k_at, k_at_in = counts["top_k"]
    return {
        "relevance_mass_accuracy": (float("nan") if pos_total == 0
                                    else float(pos_in / pos_total)),
        "relevance_rank_accuracy": _cut_share(n_in, above, above_in, at, at_in),
        "auroc": float(two_u / (2 * n_in * n_out)),
        "pointing_game": n_hits / n_peaks if n_peaks else 0.0,  # 0: a constant map
        "top_k_precision": _cut_share(count_k, k_above, k_above_in, k_at, k_at_in),
    }


def truth_scores_lazy(heatmap: Any, mask: Any, *, spacing: Any = None,
                      tolerance_mm: float = 0.0, k: int | float = 0.01,
                      slab: int | None = None) -> dict[str, float]:
    """:func:`~napari_xaimed.explanations.truth_metrics.truth_scores`, slab by slab.

    Parameters
    ----------
    heatmap : array_like
        3D relevance ``(z, y, x)``: a dask, zarr or numpy array (or a memory map).
    mask : array_like
        Ground truth on the heatmap's grid, any of those kinds (nonzero = inside).
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    tolerance_mm : float
        The pointing game's tolerance (mm).
    k : int or float
        The top-k precision's voxels: a count, or a fraction of the voxels.
    slab : int, optional
        Planes read at a time (default: about 64 MB in float64, a multiple of the z chunk).

    Returns
    -------
    dict of str to float
        The keys and values of ``truth_scores``: ``relevance_mass_accuracy``,
        ``relevance_rank_accuracy``, ``auroc``, ``pointing_game`` (the share of the voxels
        tied for the maximum within the tolerance of the mask) and ``top_k_precision``.

    Raises
    ------
    XaimedError
        As ``truth_scores`` does: a heatmap that is not 3D, shapes that differ, NaN or infinite
        relevance, an empty mask or one covering the whole volume, a bad ``k`` or tolerance.

    Examples
    --------
    >>> import dask.array as da
    >>> heat = da.zeros((4, 8, 8), chunks=(1, 8, 8))
    >>> mask = da.zeros((4, 8, 8), chunks=(1, 8, 8), dtype=bool)
    >>> truth_scores_lazy(heat + (mask + 1), mask | (heat == 0))  # doctest: +SKIP
    """
    return run_steps(truth_scores_steps(heatmap, mask, spacing=spacing,
                                        tolerance_mm=tolerance_mm, k=k, slab=slab))


def relevance_by_region_steps(heatmap: Any, labels: Any, *,
                              names: Mapping[int, str] | None = None, spacing: Any = None,
                              slab: int | None = None) -> Steps[pd.DataFrame]:
    """:func:`relevance_by_region_lazy` as steps (one per slab), returning the table."""
    shape = tuple(int(n) for n in np.shape(heatmap))
    dtype = getattr(heatmap, "dtype", None)  # nested lists: read to learn it
    _check_heat_type(shape, np.asarray(heatmap).dtype if dtype is None else np.dtype(dtype))
    _check_labels_shape(tuple(int(n) for n in np.shape(labels)), shape)
    voxel_mm3 = float(np.prod(as_spacing(spacing)))
    ids = np.empty(0, np.int64)
    counts = np.empty(0, np.int64)
    sums = np.empty(0, np.float64)
    positive = np.empty(0, np.float64)
    total_positive = 0.0
    bounds = list(z_slabs(shape[0], _slab(heatmap, slab)))
    for i, (start, stop) in enumerate(bounds):
        yield Progress(i, len(bounds), "summing the heatmap by region")
        heat = read_slab(heatmap, start, stop).astype(np.float64, copy=False)
        _check_finite(bool(np.all(np.isfinite(heat))))
        lab = read_slab(labels, start, stop)
        _check_whole(_labels_whole(lab), lab.dtype)
        if lab.dtype.kind not in "iu":
            lab = lab.astype(np.int64)
        _check_label_range(lab.min(), True)  # negative labels now, no regions at the end
        flat, weights = lab.ravel(), heat.ravel()
        present = np.unique(flat)
        grown = np.union1d(ids, present[present > 0]).astype(np.int64)
        if grown.size > ids.size:  # regions first seen in this slab start at zero
            where = np.searchsorted(grown, ids)
            counts, sums, positive = (_spread(values, where, grown.size)
                                      for values in (counts, sums, positive))
            ids = grown
        index = np.searchsorted(ids, flat)
        index[flat == 0] = ids.size
        clipped = np.clip(weights, 0, None)
        counts = counts + np.bincount(index, minlength=ids.size + 1)[:-1]
        sums = _add_in_order(sums, index, weights)
        positive = _add_in_order(positive, index, clipped)
        total_positive += float(clipped.sum())
    _check_label_range(0, ids.size > 0)
    return _region_table(ids, counts, sums, positive, total_positive, int(np.prod(shape)),
                         voxel_mm3, names)


def _spread(values: np.ndarray, where: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, values.dtype)
    out[where] = values
    return out


def _add_in_order(acc: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-region sums continued over a slab: bincount adds its weights in order, so with the
    sums so far entered first each region's sum is the in-memory bincount's, bit for bit."""
    order = np.arange(acc.size)
    return np.bincount(np.concatenate([order, index]), weights=np.concatenate([acc, weights]),
                       minlength=acc.size + 1)[:-1]


def relevance_by_region_lazy(heatmap: Any, labels: Any, *,
                             names: Mapping[int, str] | None = None, spacing: Any = None,
                             slab: int | None = None) -> pd.DataFrame:
    """:func:`~napari_xaimed.explanations.regions.relevance_by_region`, slab by slab.

    Parameters
    ----------
    heatmap : array_like
        3D relevance ``(z, y, x)``: a dask, zarr or numpy array.
    labels : array_like of int
        Regions on the heatmap's grid (0 background), any of those kinds.
    names : mapping, optional
        Region names by label.
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    slab : int, optional
        Planes read at a time (default: about 64 MB in float64).

    Returns
    -------
    pandas.DataFrame
        The table of ``relevance_by_region`` (columns
        :data:`~napari_xaimed.explanations.regions.REGION_COLUMNS`). Memory: one slab plus a
        few numbers per region.

    Raises
    ------
    XaimedError
        As ``relevance_by_region`` does.
    """
    return run_steps(relevance_by_region_steps(heatmap, labels, names=names, spacing=spacing,
                                               slab=slab))
