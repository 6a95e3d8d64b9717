"""Region-wise analysis: each voxel goes to its nearest reference instance (distance in mm),
and the prediction is judged inside each reference's region."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed.evaluation.distances import distance_metrics
from napari_xaimed.evaluation.nearest import nearest_labels
from napari_xaimed.evaluation.overlap import pair_score

REGIONS_PER_STEP = 50


def voronoi_regions(ref_map: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Compact reference numbers of the nearest reference instance, for every voxel (the
    nearest reference voxel's number, in mm; ties as scipy's exact feature transform breaks
    them, see :func:`~napari_xaimed.evaluation.nearest.nearest_labels`)."""
    if not ref_map.any():
        return np.zeros_like(ref_map)
    return nearest_labels(ref_map, spacing)


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
    wanted = [m for m in metrics if m in ("hd", "hd95", "hd95_directed", "assd", "nsd")]
    pred_boxes = ndi.find_objects(np.where(pred_fg, region, 0), max_label=n_ref) if wanted else []
    ref_boxes = ndi.find_objects(ref_map, max_label=n_ref) if wanted else []
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
            row[m] = float("nan")
        if wanted and pred_sizes[r] > 0:
            boxes = [b for b in (ref_boxes[r - 1], pred_boxes[r - 1]) if b is not None]
            box = tuple(slice(max(min(b[a].start for b in boxes) - 1, 0),
                              min(max(b[a].stop for b in boxes) + 1, ref_map.shape[a]))
                        for a in range(3))
            ref_mask = ref_map[box] == r
            pred_mask = pred_fg[box] & (region[box] == r)
            row.update(distance_metrics(ref_mask, pred_mask, spacing, nsd_tolerance_mm,
                                        tuple(wanted)))
        rows.append(row)
    return rows
