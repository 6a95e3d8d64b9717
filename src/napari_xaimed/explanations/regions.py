"""Relevance by region: a heatmap summarised over the regions of a label map (an atlas), and
its agreement with a continuous reference map (a meta-analysis map, a lesion probability map).

:func:`relevance_by_region` gives one row per region: voxels, volume in mm³, summed and mean
relevance, the region's share of the volume's positive relevance, that share against the
share a map with no information would give (its share of the voxels), and the rank by summed
relevance. :func:`reference_agreement` compares a heatmap with a reference map voxel by voxel
(Pearson and Spearman correlation, AUROC of the heatmap for the reference's top ``k`` %) and,
given regions, region by region (correlation of the region means), as heatmap-versus-
meta-analysis studies report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.explanations.region_table import (  # noqa: F401 - REGION_COLUMNS: also here
    REGION_COLUMNS,
    _check_finite,
    _check_heat_type,
    _check_label_range,
    _check_labels_shape,
    _check_whole,
    _labels_whole,
    _region_table,
)
from napari_xaimed.explanations.truth_metrics import auroc
from napari_xaimed.io.lazy import is_lazy


def _heat(heatmap: Any, name: str = "heatmap") -> np.ndarray:
    heat = np.asarray(heatmap)
    _check_heat_type(heat.shape, heat.dtype, name)
    heat = heat.astype(np.float64, copy=False)
    _check_finite(bool(np.all(np.isfinite(heat))), name)
    return heat


def _labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    lab = np.asarray(labels)
    _check_labels_shape(lab.shape, shape)
    _check_whole(_labels_whole(lab), lab.dtype)
    if lab.dtype.kind not in "iu":  # whole floats and bools
        lab = lab.astype(np.int64)
    _check_label_range(lab.min(), bool(lab.any()))
    return lab


def relevance_by_region(heatmap: Any, labels: Any, *, names: Mapping[int, str] | None = None,
                        spacing: Any = None) -> pd.DataFrame:
    """One row per region of ``labels`` summarising the heatmap inside it.

    Parameters
    ----------
    heatmap : array_like
        3D relevance, ``(z, y, x)``; signed or not.
    labels : array_like of int
        Regions on the heatmap's grid; 0 is background and gets no row.
    names : mapping, optional
        Region names by label (an atlas' lookup table); unnamed regions are called by label.
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`REGION_COLUMNS`, sorted by rank: ``sum`` and ``mean`` of the relevance,
        ``positive_share`` the region's share of the volume's positive relevance (0 when the
        map has none), ``enrichment`` that share over the region's share of the voxels (1:
        no more than a map without information), ``rank`` 1 for the largest sum (ties share
        the lower rank).

    A dask heatmap or label map (a volume larger than memory) is summarised slab by slab by
    :func:`~napari_xaimed.explanations.truth_lazy.relevance_by_region_lazy`, with the same
    table.
    """
    if is_lazy(heatmap) or is_lazy(labels):
        from napari_xaimed.explanations.truth_lazy import relevance_by_region_lazy

        return relevance_by_region_lazy(heatmap, labels, names=names, spacing=spacing)
    heat = _heat(heatmap)
    lab = _labels(labels, heat.shape)
    voxel_mm3 = float(np.prod(as_spacing(spacing)))
    flat = lab.ravel()
    ids = np.unique(flat)
    ids = ids[ids > 0]
    # one dense index per region present: label ids may be sparse (atlas codes up to 10^4)
    index = np.searchsorted(ids, flat)
    index[flat == 0] = len(ids)
    weights = heat.ravel()
    counts = np.bincount(index, minlength=len(ids) + 1)[:-1]
    sums = np.bincount(index, weights=weights, minlength=len(ids) + 1)[:-1]
    positive = np.bincount(index, weights=np.clip(weights, 0, None),
                           minlength=len(ids) + 1)[:-1]
    total_positive = float(np.clip(weights, 0, None).sum())
    return _region_table(ids, counts, sums, positive, total_positive, heat.size, voxel_mm3,
                         names)


@dataclass(frozen=True)
class Agreement:
    """How a heatmap agrees with a reference map.

    Attributes
    ----------
    pearson, spearman : float
        Voxel-wise correlation over the compared voxels (inside ``mask`` when given).
    auroc : dict of float to float
        By ``k`` (percent): AUROC of the heatmap as a classifier of the reference's top
        ``k`` % voxels (0.5: no better than chance).
    region_pearson, region_spearman : float or None
        Correlation of the per-region mean relevance with the per-region mean of the
        reference (None without regions, or with fewer than three regions).
    voxels : int
        How many voxels were compared.
    """

    pearson: float
    spearman: float
    auroc: dict[float, float]
    region_pearson: float | None
    region_spearman: float | None
    voxels: int

    def to_dict(self) -> dict[str, Any]:
        return {"pearson": self.pearson, "spearman": self.spearman,
                **{f"auroc_top{k:g}%": v for k, v in self.auroc.items()},
                "region_pearson": self.region_pearson, "region_spearman": self.region_spearman,
                "voxels": self.voxels}


def reference_agreement(heatmap: Any, reference: Any, *, mask: Any = None,
                        regions: Any = None, top_percent: Sequence[float] = (5.0, 10.0, 20.0),
                        ) -> Agreement:
    """Agreement of a heatmap with a continuous reference map on the same grid.

    Parameters
    ----------
    heatmap, reference : array_like
        3D maps ``(z, y, x)`` of one shape.
    mask : array_like of bool, optional
        Compare inside it only (a brain mask: the background would inflate agreement).
    regions : array_like of int, optional
        Labels (an atlas) for the region-level correlation.
    top_percent : sequence of float
        The ``k`` of "the reference's top ``k`` %" for the AUROC, each in (0, 100).

    Returns
    -------
    Agreement

    Raises
    ------
    XaimedError
        For a dask input (a volume larger than memory): the Spearman correlation ranks every
        voxel at once, so compare on a crop held in memory.
    """
    from scipy.stats import pearsonr, spearmanr  # scipy.stats imports slowly: when used

    if any(is_lazy(a) for a in (heatmap, reference, mask, regions)):
        raise XaimedError(
            "the heatmap or the reference is read lazily (larger than memory): the agreement "
            "ranks every voxel at once, which is not done slab by slab. Compare on a crop in "
            "memory (e.g. reference_agreement(heatmap[z0:z1].compute(), "
            "reference[z0:z1].compute())).")

    heat = _heat(heatmap)
    ref = _heat(reference, "reference")
    if ref.shape != heat.shape:
        raise XaimedError(f"the reference {ref.shape} and the heatmap {heat.shape} differ in "
                          "shape: resample one onto the other's grid first.")
    inside = np.ones(heat.shape, bool) if mask is None else np.asarray(mask).astype(bool)
    if inside.shape != heat.shape:
        raise XaimedError(f"the mask {inside.shape} must have the heatmap's shape {heat.shape}.")
    h, r = heat[inside], ref[inside]
    if h.size < 3:
        raise XaimedError(f"only {h.size} voxels to compare: give a larger mask.")
    if np.ptp(h) == 0 or np.ptp(r) == 0:
        which = "heatmap" if np.ptp(h) == 0 else "reference"
        raise XaimedError(f"the {which} is constant where compared: a correlation is not "
                          "defined for it.")
    ks = [float(k) for k in top_percent]
    if not ks or any(not 0 < k < 100 for k in ks):
        raise XaimedError(f"top_percent must be percentages in (0, 100), got {list(ks)}.")
    areas = {}
    for k in ks:
        cut = np.percentile(r, 100 - k)
        top = r >= cut
        if top.all():  # a reference with one value over most voxels: no top k %
            raise XaimedError(f"the reference's top {k:g} % cannot be told apart (its values "
                              "tie): give a continuous reference or a larger k.")
        areas[k] = auroc(h.reshape(-1, 1, 1), top.reshape(-1, 1, 1))
    region_pearson = region_spearman = None
    if regions is not None:
        table_h = relevance_by_region(np.where(inside, heat, 0), np.where(inside, regions, 0))
        table_r = relevance_by_region(np.where(inside, ref, 0), np.where(inside, regions, 0))
        merged = table_h.merge(table_r, on="label", suffixes=("", "_ref"))
        if len(merged) >= 3 and merged["mean"].nunique() > 1 \
                and merged["mean_ref"].nunique() > 1:
            region_pearson = float(pearsonr(merged["mean"], merged["mean_ref"])[0])
            region_spearman = float(spearmanr(merged["mean"], merged["mean_ref"])[0])
    return Agreement(float(pearsonr(h, r)[0]), float(spearmanr(h, r)[0]), areas,
                     region_pearson, region_spearman, int(h.size))
