"""How well a heatmap agrees with a ground-truth mask of where the evidence is.

All take a heatmap and a boolean mask of one 3D shape. Higher relevance means "more important".
A perfect map (relevance only inside the mask) scores 1 on each; a map with no information
(constant, or random) scores about chance, which is stated per function.

- :func:`relevance_mass_accuracy`: share of the *positive* relevance that lies inside the mask
  (Arras et al. 2022, CLEVR-XAI). Chance: ``|mask| / voxels``.
- :func:`relevance_rank_accuracy`: share of the ``|mask|`` most relevant voxels that lie inside
  the mask (Arras et al. 2022). Chance: ``|mask| / voxels``.
- :func:`top_k_precision`: the same share for the ``k`` most relevant voxels.
- :func:`auroc`: the heatmap as a voxel classifier of the mask (Mann-Whitney U, ties counted
  half). Chance: 0.5.
- :func:`pointing_game`: whether the most relevant voxel lies in the mask, or within a tolerance
  in mm of it (Zhang et al. 2018); with several voxels tied for the maximum, the share of them
  that do.

Ties are resolved without arbitrary order: where the top ``k`` voxels end inside a run of equal
values, the run counts with the share of its voxels inside the mask (the expectation over all
orders of the tied voxels), so a constant map scores exactly chance. The pointing game takes
the same expectation over the voxels tied for the maximum, so a blocky map (occlusion windows,
supervoxels) does not score a hit because one voxel of its top block touches the mask.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.explanations.truth_core import (
    _check_inside,
    _check_shapes,
    _cut_share,
    _peaks_near,
    _reach,
    _top_count,
)
from napari_xaimed.io.lazy import is_lazy


def _check_finite(finite: bool) -> None:
    if not finite:
        raise XaimedError("the heatmap holds NaN or infinite values: recompute it, or replace "
                          "them (np.nan_to_num) if they mark 'no relevance'.")


def _check(heatmap: Any, mask: Any, *, needs_outside: bool = False
           ) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(heatmap)
    truth = np.asarray(mask)
    _check_shapes(heat.shape, truth.shape)
    heat = heat.astype(np.float64, copy=False)
    _check_finite(bool(np.all(np.isfinite(heat))))
    truth = truth.astype(bool, copy=False) if truth.dtype != bool else truth
    _check_inside(int(np.count_nonzero(truth)), truth.size, needs_outside)
    return heat, truth


def relevance_mass_accuracy(heatmap: Any, mask: Any) -> float:
    """Share of the positive relevance inside the mask.

    Parameters
    ----------
    heatmap : array_like
        3D relevance map.
    mask : array_like
        Ground truth, the heatmap's shape (nonzero = inside).

    Returns
    -------
    float
        In [0, 1]; NaN when the map has no positive relevance at all.
    """
    heat, truth = _check(heatmap, mask)
    positive = np.clip(heat, 0, None)
    total = positive.sum()
    if total == 0:
        return math.nan
    return float(positive[truth].sum() / total)


def top_k_precision(heatmap: Any, mask: Any, k: int | float = 0.01) -> float:
    """Share of the ``k`` most relevant voxels that lie inside the mask.

    Parameters
    ----------
    heatmap, mask : array_like
    k : int or float
        A number of voxels (int >= 1), or a fraction of the volume's voxels (float in (0, 1]).

    Returns
    -------
    float
        In [0, 1]; ties at the k-th value count with their share inside the mask.
    """
    heat, truth = _check(heatmap, mask)
    return _top_share(heat.ravel(), truth.ravel(), _top_count(k, heat.size))


def _top_share(values: np.ndarray, inside: np.ndarray, count: int) -> float:
    """Share inside of the ``count`` largest values, ties at the cut shared out."""
    cut = np.partition(values, values.size - count)[values.size - count]  # the count-th largest
    above = values > cut
    at = values == cut
    return _cut_share(count, int(np.count_nonzero(above)),
                      int(np.count_nonzero(above & inside)), int(np.count_nonzero(at)),
                      int(np.count_nonzero(at & inside)))


def relevance_rank_accuracy(heatmap: Any, mask: Any) -> float:
    """Share of the ``|mask|`` most relevant voxels that lie inside the mask.

    Returns
    -------
    float
        In [0, 1] (1: the mask's voxels are exactly the most relevant ones).
    """
    heat, truth = _check(heatmap, mask)
    return _top_share(heat.ravel(), truth.ravel(), int(np.count_nonzero(truth)))


def auroc(heatmap: Any, mask: Any) -> float:
    """Area under the ROC curve of the heatmap as a classifier of mask voxels.

    The probability that a random voxel inside the mask has more relevance than a random voxel
    outside it, ties counting half (the Mann-Whitney U statistic over ``|inside| |outside|``).

    Returns
    -------
    float
        In [0, 1]; 0.5 for a map with no information.
    """
    heat, truth = _check(heatmap, mask, needs_outside=True)
    from scipy.stats import rankdata  # scipy.stats takes ~0.7 s to import: only when used

    ranks = rankdata(heat.ravel())  # average ranks for ties
    n_in = int(np.count_nonzero(truth))
    n_out = truth.size - n_in
    u = ranks[truth.ravel()].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def pointing_game(heatmap: Any, mask: Any, *, spacing: Any = None,
                  tolerance_mm: float = 0.0) -> float:
    """Whether the most relevant voxel hits the mask: the share of the voxels tied for the
    maximum that do.

    Parameters
    ----------
    heatmap, mask : array_like
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    tolerance_mm : float
        A hit may lie up to this far (centre to centre, mm) from a mask voxel.

    Returns
    -------
    float
        1.0 when the voxel holding the map's maximum lies within the tolerance of the mask, 0.0
        when not. When several voxels tie for the maximum, the share of them within the
        tolerance: the expectation over which of them is "the" peak, as the top-k precision
        shares its ties (an all-ones map with one zero voxel scores the share of its voxels
        near the mask, not a hit). A constant map (e.g. all zeros: the method found nothing)
        points nowhere: 0.0.
    """
    heat, truth = _check(heatmap, mask)
    spacing_arr, reach = _reach(spacing, tolerance_mm)
    high = heat.max()
    if heat.min() == high:
        return 0.0
    peaks = heat == high
    return _peaks_near(peaks, truth, reach, spacing_arr, tolerance_mm) / np.count_nonzero(peaks)


def truth_scores(heatmap: Any, mask: Any, *, spacing: Any = None, tolerance_mm: float = 0.0,
                 k: int | float = 0.01) -> dict[str, float]:
    """All of the above at once: ``relevance_mass_accuracy``, ``relevance_rank_accuracy``,
    ``auroc``, ``pointing_game`` and ``top_k_precision``.

    A dask heatmap or mask (a volume larger than memory) is scored slab by slab by
    :func:`~napari_xaimed.explanations.truth_lazy.truth_scores_lazy`, with the same values;
    the single metrics above read their inputs whole."""
    if is_lazy(heatmap) or is_lazy(mask):
        from napari_xaimed.explanations.truth_lazy import truth_scores_lazy

        return truth_scores_lazy(heatmap, mask, spacing=spacing, tolerance_mm=tolerance_mm,
                                 k=k)
    return {
        "relevance_mass_accuracy": relevance_mass_accuracy(heatmap, mask),
        "relevance_rank_accuracy": relevance_rank_accuracy(heatmap, mask),
        "auroc": auroc(heatmap, mask),
        "pointing_game": pointing_game(heatmap, mask, spacing=spacing,
                                       tolerance_mm=tolerance_mm),
        "top_k_precision": top_k_precision(heatmap, mask, k),
    }
