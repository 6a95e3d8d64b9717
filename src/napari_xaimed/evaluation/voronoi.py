"""Region-wise analysis: each voxel goes to its nearest reference instance (distance in mm),
and the prediction is judged inside each reference's region."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed.evaluation.distances import distance_metrics, grouped_distance_metrics
from napari_xaimed.evaluation.footprints import VoxelCrops, scan
from napari_xaimed.evaluation.nearest import nearest_labels
from napari_xaimed.evaluation.overlap import pair_score
from napari_xaimed.evaluation.shells import pair_surface_distances

REGIONS_PER_STEP = 50


def voronoi_regions(ref_map: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Compact reference numbers of the nearest reference instance, for every voxel (the
    nearest reference voxel's number, in mm; ties as scipy's exact feature transform breaks
    them, see :func:`~napari_xaimed.evaluation.nearest.nearest_labels`)."""
    if not ref_map.any():
        return np.zeros_like(ref_map)
    return nearest_labels(ref_map, spacing)


def region_distances(ref_map: np.ndarray, pred_region: np.ndarray, n_ref: int,
                     regions: np.ndarray, spacing: tuple[float, float, float],
                     nsd_tolerance_mm: float, wanted: tuple[str, ...]
                     ) -> dict[int, dict[str, float]]:
    """Distance metrics of reference ``r`` against the prediction inside its region, for every
    ``r`` of ``regions`` (each with prediction voxels in its region).

    ``pred_region`` holds each prediction voxel's region number (0 elsewhere), so reference
    ``r`` and the "instance" ``r`` of ``pred_region`` form one pair: where the foreground is
    sparse, all pairs are measured at once from their voxel lists
    (:func:`~napari_xaimed.evaluation.shells.pair_surface_distances`, the values of
    :func:`~napari_xaimed.evaluation.distances.distance_metrics` on each pair's crop), so the
    cost follows the surfaces, not the regions' boxes; else crop by crop.
    """
    _, crops = scan(ref_map, pred_region, n_ref, n_ref)
    regions = np.asarray(regions, np.int64)
    if isinstance(crops, VoxelCrops):
        a, a_pair, b, b_pair = pair_surface_distances(ref_map, pred_region, crops, regions,
                                                      regions, spacing)
        table = grouped_distance_metrics(a, a_pair, b, b_pair, len(regions), nsd_tolerance_mm,
                                         wanted)
        return {int(r): {m: float(table[m][j]) for m in wanted}
                for j, r in enumerate(regions.tolist())}
    out = {}
    for r in regions.tolist():
        _, ref_mask, pred_mask = crops.masks((r,), (r,))
        out[r] = distance_metrics(ref_mask, pred_mask, spacing, nsd_tolerance_mm, wanted)
    return out


def region_rows(ref_map: np.ndarray, pred_map: np.ndarray, region: np.ndarray,
                ref_ids: np.ndarray, pred_ids: np.ndarray, spacing: tuple[float, float, float],
                metrics: tuple[str, ...], nsd_tolerance_mm: float) -> list[dict[str, Any]]:
    """One row per reference region: the predictions inside it and their Dice, IoU, distances."""
    return run_steps(region_rows_steps(ref_map, pred_map, region, ref_ids, pred_ids, spacing,
                                       metrics, nsd_tolerance_mm))


def region_rows_steps(ref_map: np.ndarray, pred_map: np.ndarray, region: np.ndarray,
                      ref_ids: np.ndarray, pred_ids: np.ndarray,
                      spacing: tuple[float, float, float], metrics: tuple[str, ...],
                      nsd_tolerance_mm: float) -> Steps[list[dict[str, Any]]]:
    """Generator form of :func:`region_rows`: yields progress every few regions, so a cancel
    need not wait for the distances of thousands of regions."""
    n_ref = len(ref_ids)
    if n_ref == 0:
        return []
    pred_fg = pred_map > 0
    ref_sizes = np.bincount(ref_map.ravel(), minlength=n_ref + 1)
    in_region = region[pred_fg]
    pred_sizes = np.bincount(in_region, minlength=n_ref + 1)
    inter = np.bincount(in_region, weights=(ref_map[pred_fg] == in_region), minlength=n_ref + 1)
    keys = np.unique(in_region.astype(np.int64) * (len(pred_ids) + 1) + pred_map[pred_fg])
    preds_of: dict[int, list[int]] = {}
    for key in keys.tolist():
        preds_of.setdefault(key // (len(pred_ids) + 1), []).append(
            int(pred_ids[key % (len(pred_ids) + 1) - 1]))
    wanted = tuple(m for m in metrics if m in ("hd", "hd95", "hd95_directed", "assd", "nsd"))
    distances: dict[int, dict[str, float]] = {}
    if wanted and pred_sizes[1:].any():
        yield Progress(0, n_ref, "region distances")
        distances = region_distances(ref_map, np.where(pred_fg, region, 0), n_ref,
                                     np.flatnonzero(pred_sizes[1:]) + 1, spacing,
                                     nsd_tolerance_mm, wanted)
    rows = []
    for r in range(1, n_ref + 1):
        if r % REGIONS_PER_STEP == 1:
            yield Progress(r - 1, n_ref, f"region {r} of {n_ref}")
        row: dict[str, Any] = {
            "reference_id": int(ref_ids[r - 1]),
            "prediction_ids": preds_of.get(r, []),
            "reference_voxels": int(ref_sizes[r]),
            "prediction_voxels": int(pred_sizes[r]),
            "dice": float(pair_score(inter[r], ref_sizes[r], pred_sizes[r], "dice")),
            "iou": float(pair_score(inter[r], ref_sizes[r], pred_sizes[r], "iou")),
        }
        for m in wanted:
            row[m] = distances[r][m] if r in distances else float("nan")
        rows.append(row)
    return rows
