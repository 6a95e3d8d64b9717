"""Relevance per predicted structure: a segmentation network's heatmap summarised over each
segment it predicts, inside and around it (the per-segment aggregation of Agg2Exp,
arXiv 2407.16653).

A *structure* is one connected component (26-connectivity by default) of one predicted label
value: two separate lesions of class 1 are two structures, each with its own row. The "around"
shell of a structure is the background within ``margin_mm`` of it (a Euclidean distance in mm
on the voxel grid, so anisotropic spacing counts), leaving out every predicted structure, so a
neighbour's own relevance is never counted as the context of another.

:func:`relevance_by_structure` gives one row per structure; :func:`relevance_by_structure_region`
gives, per region of an atlas, the relevance inside the predicted structures there (the
atlas table of :func:`~napari_xaimed.explanations.regions.relevance_by_region` restricted to the
prediction).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.explanations.regions import _heat, _labels, relevance_by_region

#: The columns of :func:`relevance_by_structure`'s table, in order.
STRUCTURE_COLUMNS = ("label", "structure", "voxels", "volume_mm3", "sum", "mean",
                     "positive_share", "around_voxels", "around_sum", "around_mean",
                     "inside_around_ratio", "region", "region_name")
_RANK = {6: 1, 18: 2, 26: 3}


def _structures(prediction: np.ndarray, connectivity: int, margin_mm: float,
                spacing: tuple[float, ...]
                ) -> Iterator[tuple[int, int, tuple[slice, ...], np.ndarray]]:
    """``(label, structure number within the label, box, voxel mask in the box)`` for each
    component; the box is its bounding box grown by the margin (the shell cannot reach
    further), so the work per structure scales with its size, not the volume's."""
    rank = _RANK.get(int(connectivity))
    if rank is None:
        raise XaimedError(f"connectivity must be 6, 18 or 26, got {connectivity}.")
    structure = ndi.generate_binary_structure(3, rank)
    grow = [int(np.ceil(margin_mm / s)) for s in spacing]
    for value in np.unique(prediction):
        if value == 0:
            continue
        comps, _ = ndi.label(prediction == value, structure=structure)
        for k, tight in enumerate(ndi.find_objects(comps), start=1):
            box = tuple(slice(max(0, sl.start - g), min(n, sl.stop + g))
                        for sl, g, n in zip(tight, grow, prediction.shape, strict=True))
            yield int(value), k, box, comps[box] == k


def relevance_by_structure(heatmap: Any, prediction: Any, *, spacing: Any = None,
                           margin_mm: float = 5.0, regions: Any = None,
                           names: Mapping[int, str] | None = None,
                           connectivity: int = 26) -> pd.DataFrame:
    """One row per predicted structure summarising the heatmap inside and around it.

    Parameters
    ----------
    heatmap : array_like
        3D relevance ``(z, y, x)`` of the prediction (any method; signed or not).
    prediction : array_like of int
        The predicted segmentation on the heatmap's grid; 0 is background.
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    margin_mm : float
        Width of the shell "around" each structure, in mm (> 0).
    regions : array_like of int, optional
        An atlas on the same grid: each structure is then assigned the region holding most of
        its voxels (``region``, ``region_name``; 0 when most lie outside every region).
    names : mapping, optional
        Region names by label, for ``region_name``.
    connectivity : {6, 18, 26}
        Neighbourhood that joins voxels into one structure.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`STRUCTURE_COLUMNS`, ordered by label then structure: ``sum`` and
        ``mean`` of the relevance inside, ``positive_share`` = positive relevance inside /
        positive relevance of the whole volume (0 when the map has none), ``around_*`` the
        same over the shell, ``inside_around_ratio`` = mean inside / mean around (NaN when
        the shell is empty or its mean is 0).
    """
    heat = _heat(heatmap)
    pred = _prediction(prediction, heat.shape)
    spacing = as_spacing(spacing)
    if not float(margin_mm) > 0:
        raise XaimedError(f"margin_mm must be > 0 (the shell's width in mm), got {margin_mm}.")
    atlas = None if regions is None else _labels(regions, heat.shape)
    voxel_mm3 = float(np.prod(spacing))
    positive = np.clip(heat, 0, None)
    total_positive = float(positive.sum())
    foreground = pred > 0
    rows = []
    for value, number, box, inside in _structures(pred, connectivity, float(margin_mm),
                                                  spacing):
        # distance in mm from the structure; the shell is background within the margin
        dist = ndi.distance_transform_edt(~inside, sampling=spacing)
        shell = (dist <= float(margin_mm)) & ~foreground[box]
        heat_box = heat[box]
        n_in, n_out = int(inside.sum()), int(shell.sum())
        s_in, s_out = float(heat_box[inside].sum()), float(heat_box[shell].sum())
        mean_in = s_in / n_in
        mean_out = s_out / n_out if n_out else float("nan")
        region, region_name = 0, ""
        if atlas is not None:
            counts = np.bincount(atlas[box][inside].ravel())
            region = int(np.argmax(counts))
            region_name = (names or {}).get(region, str(region)) if region else ""
        rows.append({
            "label": value, "structure": number, "voxels": n_in,
            "volume_mm3": n_in * voxel_mm3, "sum": s_in, "mean": mean_in,
            "positive_share": float(positive[box][inside].sum()) / total_positive
            if total_positive > 0 else 0.0,
            "around_voxels": n_out, "around_sum": s_out, "around_mean": mean_out,
            "inside_around_ratio": mean_in / mean_out if n_out and mean_out != 0
            else float("nan"),
            "region": region, "region_name": region_name})
    return pd.DataFrame(rows, columns=list(STRUCTURE_COLUMNS))


def _prediction(prediction: Any, shape: tuple[int, ...]) -> np.ndarray:
    if np.shape(prediction) == shape and not np.any(prediction):
        raise XaimedError("the prediction is empty (all 0): there is no structure to "
                          "summarise; explain a case where the network predicts something.")
    return _labels(prediction, shape)


def relevance_by_structure_region(heatmap: Any, prediction: Any, regions: Any, *,
                                  names: Mapping[int, str] | None = None,
                                  spacing: Any = None) -> pd.DataFrame:
    """Per atlas region, the relevance inside the predicted structures that lie there.

    :func:`~napari_xaimed.explanations.regions.relevance_by_region` over the regions cut to the
    prediction's foreground: ``voxels``, ``sum`` and ``mean`` count predicted voxels only,
    ``positive_share`` is against the whole volume's positive relevance.

    Raises
    ------
    XaimedError
        When no predicted voxel lies in any region.
    """
    heat = _heat(heatmap)
    pred = _prediction(prediction, heat.shape)
    atlas = _labels(regions, heat.shape)
    cut = np.where(pred > 0, atlas, 0)
    if not cut.any():
        raise XaimedError("no predicted structure lies in any region of the atlas: check "
                          "that the atlas is registered onto the prediction's grid.")
    return relevance_by_region(heat, cut, names=names, spacing=spacing)
