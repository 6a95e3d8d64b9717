"""One class's panoptic evaluation from its instance maps (or a ready
:class:`~napari_xaimed.evaluation.footprints.LabelScan`): matching, counts, PQ/SQ/RQ, each
matched group's overlap and distance metrics, part-aware scores, Voronoi regions and the error
maps. Shared by :func:`~napari_xaimed.evaluation.evaluate` in memory and
:func:`~napari_xaimed.evaluation.evaluate_lazy` slab by slab, so both compute the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from napari_xaimed._core.progress import Progress, Steps, in_background, within
from napari_xaimed.evaluation.distances import cldice, distance_metrics, grouped_distance_metrics
from napari_xaimed.evaluation.errors import (
    error_map,
    missed_map,
    sparse_error_map,
    sparse_missed_map,
)
from napari_xaimed.evaluation.footprints import LabelScan, VoxelCrops, scan
from napari_xaimed.evaluation.matching import Counts, count, group_edges, match_edges
from napari_xaimed.evaluation.overlap import OverlapTable, score_value
from napari_xaimed.evaluation.parts import combined_score, part_scores
from napari_xaimed.evaluation.results import ClassResult, InstanceRow
from napari_xaimed.evaluation.shells import pair_surface_distances
from napari_xaimed.evaluation.voronoi import region_rows_steps, voronoi_regions


def evaluate_class_steps(
    name: str, ref_map: np.ndarray, ref_ids: np.ndarray, pred_map: np.ndarray,
    pred_ids: np.ndarray, *, spacing: tuple[float, float, float], matching: str,
    threshold: float, match_metric: str, assignment: str, strict: bool,
    metrics: tuple[str, ...], nsd_tolerance_mm: float, keep_maps: bool = False,
    part_spec: dict[str, list[int]] | None = None,
    semantic: tuple[np.ndarray, np.ndarray] | None = None, voronoi: bool = False,
    scanned: LabelScan | None = None,
) -> Steps[ClassResult]:
    """Match and measure one class, given its compact instance maps, or (``scanned``) the
    instance maps as they are with what :func:`~napari_xaimed.evaluation.footprints.scan_labels`
    read from them (not with ``voronoi``, which needs the compact reference map)."""
    if scanned is None:
        table, crops = scan(ref_map, pred_map, len(ref_ids), len(pred_ids))
        ref_values = pred_values = None
    else:
        table, crops = scanned.table, scanned.crops
        ref_values, pred_values = scanned.ref_values, scanned.pred_values
    counts, groups = match_table(table, threshold=threshold, match_metric=match_metric,
                                 matching=matching, assignment=assignment, strict=strict)
    # Original ids and sizes by compact number as Python ints: read once per row and instance.
    ref_id, pred_id = [0, *ref_ids.tolist()], [0, *pred_ids.tolist()]
    ref_voxels, pred_voxels = table.ref_sizes.tolist(), table.pred_sizes.tolist()
    voxel_mm3 = float(np.prod(spacing))
    rows = []
    accepted_set = set(counts.accepted)
    wanted = tuple(m for m in metrics if m != "cldice")
    centres, batched = None, {}
    # Crops that measure distances slab by slab (lazy maps) need no masks for them; clDice
    # still takes the group's whole crop.
    slabbed = callable(getattr(crops, "distances", None))
    if isinstance(crops, VoxelCrops) and groups and (metrics or part_spec):
        centres = crops.reference_centres([g.refs for g in groups])
        if wanted:
            yield Progress(0, len(groups), f"{name}: surface distances")
            batched = _single_pair_distances(ref_map, pred_map, crops, groups, spacing,
                                             nsd_tolerance_mm, wanted, ref_values, pred_values)
    step = max(1, len(groups) // 100)  # about a hundred progress reports, not one per instance
    for i, group in enumerate(groups):
        if i % step == 0:
            yield Progress(i, len(groups), f"{name}: instance {i + 1} of {len(groups)}")
        accepted = group in accepted_set
        row = InstanceRow(
            class_name=name,
            reference_ids=tuple(ref_id[r] for r in group.refs),
            prediction_ids=tuple(pred_id[p] for p in group.preds),
            accepted=accepted,
            score=group.score,
            dice=score_value(group.inter, group.ref_size, group.pred_size, "dice"),
            iou=score_value(group.inter, group.ref_size, group.pred_size, "iou"),
            rvd=(group.pred_size - group.ref_size) / group.ref_size,
            reference_voxels=group.ref_size,
            prediction_voxels=group.pred_size,
            reference_mm3=group.ref_size * voxel_mm3,
        )
        if metrics or part_spec:
            parts_here = bool(part_spec) and accepted and semantic is not None
            if parts_here or "cldice" in metrics or (not slabbed and (
                    centres is None or (wanted and i not in batched))):
                box, ref_mask, pred_mask = crops.masks(group.refs, group.preds)
            if parts_here:
                row.parts = part_scores(box, ref_mask, pred_mask, semantic[0], semantic[1],
                                        part_spec, match_metric)
                row.part_aware_score = combined_score(group.score, row.parts)
            if i in batched:
                values = batched[i]
            elif wanted and slabbed:
                values = crops.distances(group.refs, group.preds, spacing, nsd_tolerance_mm,
                                         wanted)
            elif wanted:
                values = distance_metrics(ref_mask, pred_mask, spacing, nsd_tolerance_mm,
                                          wanted)
            else:
                values = {}
            for key, value in values.items():
                setattr(row, key, value)
            if "cldice" in metrics:
                row.cldice = cldice(ref_mask, pred_mask)
            if centres is not None:
                center = centres[i]
            elif slabbed:
                center = crops.group_centre(group.refs)
            else:
                center = np.argwhere(ref_mask).mean(axis=0) + [s.start for s in box]
            row.center_zyx = tuple(float(c) for c in center)
        rows.append(row)
    accepted_refs = {r for g in counts.accepted for r in g.refs}
    accepted_preds = {p for g in counts.accepted for p in g.preds}
    missed = [r for r in range(1, table.n_ref + 1) if r not in accepted_refs]
    false_pos = [p for p in range(1, table.n_pred + 1) if p not in accepted_preds]
    # Only the unmatched instances' voxels (sparse) or boxes (dense) are read for their centres.
    missed_centres = crops.centres("reference", missed) if missed else np.zeros((0, 3))
    fp_centres = crops.centres("prediction", false_pos) if false_pos else np.zeros((0, 3))
    yield Progress(len(groups), len(groups), f"{name}: done")
    errors = missed_ids = None
    if keep_maps:
        sparse = isinstance(crops, VoxelCrops)
        errors = (sparse_error_map(crops, table.pred_sizes, table.n_ref, counts.accepted)
                  if sparse else
                  error_map(ref_map, pred_map, table.n_ref, table.n_pred, counts.accepted))
        ids = np.asarray(ref_id, np.int64)
        missed_ids = (sparse_missed_map(crops, missed, ids) if sparse
                      else missed_map(ref_map, missed, ids))
    result = ClassResult(
        name=name, tp=counts.tp, fp=counts.fp, fn=counts.fn, pq=counts.pq, sq=counts.sq,
        rq=counts.rq, n_reference=table.n_ref, n_prediction=table.n_pred, rows=rows,
        missed_reference_ids=[ref_id[r] for r in missed],
        false_positive_ids=[pred_id[p] for p in false_pos],
        missed_voxels={ref_id[r]: ref_voxels[r] for r in missed},
        missed_centres={ref_id[r]: _point(c)
                        for r, c in zip(missed, missed_centres, strict=True)},
        false_positive_voxels={pred_id[p]: pred_voxels[p] for p in false_pos},
        false_positive_centres={pred_id[p]: _point(c)
                                for p, c in zip(false_pos, fp_centres, strict=True)},
        error_map=errors, metrics=tuple(metrics),
        missed_map=missed_ids,
    )
    if part_spec:
        _summarise_parts(result, part_spec)
    if voronoi:
        yield Progress(len(groups), len(groups), f"{name}: Voronoi regions")
        region = yield from in_background(lambda: voronoi_regions(ref_map, spacing),
                                          f"{name}: Voronoi regions")
        result.regions = yield from within(
            region_rows_steps(ref_map, pred_map, region, ref_ids, pred_ids, spacing, metrics,
                              nsd_tolerance_mm), 0, 1, f"{name}: Voronoi ")
        if keep_maps:
            lut = np.concatenate([[0], ref_ids]).astype(np.int64)
            result.region_map = lut[region].astype(np.int32 if lut.max() < 2**31 else np.int64)
    return result


def _point(centre: np.ndarray) -> tuple[float, float, float]:
    return (float(centre[0]), float(centre[1]), float(centre[2]))


def _single_pair_distances(ref_map: np.ndarray, pred_map: np.ndarray, crops: VoxelCrops,
                           groups: list, spacing: tuple[float, float, float],
                           nsd_tolerance_mm: float, wanted: tuple[str, ...],
                           ref_values: np.ndarray | None = None,
                           pred_values: np.ndarray | None = None,
                           ) -> dict[int, dict[str, float]]:
    """Distance metrics of every group of one reference and one prediction, all at once
    (:mod:`~napari_xaimed.evaluation.shells`); merged groups are left to their crops, whose
    union surface can differ from the members' surfaces where members touch."""
    single = [i for i, g in enumerate(groups) if len(g.refs) == 1 and len(g.preds) == 1]
    if not single:
        return {}
    a, a_pair, b, b_pair = pair_surface_distances(
        ref_map, pred_map, crops, [groups[i].refs[0] for i in single],
        [groups[i].preds[0] for i in single], spacing, ref_values, pred_values)
    table = grouped_distance_metrics(a, a_pair, b, b_pair, len(single), nsd_tolerance_mm,
                                     wanted)
    return {i: {key: float(values[j]) for key, values in table.items()}
            for j, i in enumerate(single)}


def _summarise_parts(result: ClassResult, part_spec: dict[str, list[int]]) -> None:
    """Per-part SQ (mean over TPs where the part is present) and PQ (= part SQ x thing RQ);
    part-aware PQ = mean combined score over TPs x RQ."""
    tps = [r for r in result.rows if r.accepted]
    for part in part_spec:
        values = [r.parts[part] for r in tps for _ in r.reference_ids
                  if not math.isnan(r.parts.get(part, math.nan))]
        result.part_sq[part] = float(np.mean(values)) if values else (
            math.nan if math.isnan(result.rq) else 0.0)
        result.part_pq[part] = result.part_sq[part] * result.rq
    combined = [r.part_aware_score for r in tps for _ in r.reference_ids]
    if combined:
        result.part_aware_pq = float(np.mean(combined)) * result.rq
    else:
        result.part_aware_pq = math.nan if math.isnan(result.rq) else 0.0


def match_table(table: OverlapTable, *, threshold: float, match_metric: str, matching: str,
                assignment: str = "greedy", strict: bool = False, scores: np.ndarray | None = None
                ) -> tuple[Counts, list]:
    """Match on a ready overlap table and count; cheap, so AUTC re-runs it per threshold."""
    if scores is None:
        scores = table.scores(match_metric)
    edges = match_edges(table, scores, threshold, matching, assignment, strict)
    inter_of = ({(int(r), int(p)): int(n) for r, p, n in
                 zip(table.pair_ref, table.pair_pred, table.pair_inter, strict=True)}
                if edges else {})
    groups = group_edges(edges, table, inter_of, match_metric, matching)
    return count(groups, table.n_ref, table.n_pred, threshold, strict, matching), groups
