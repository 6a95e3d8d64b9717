"""Panoptic quality of a prediction against a reference, per class, with per-instance metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, in_background, run_steps, within
from napari_xaimed._core.validate import as_spacing, check_fits_in_memory
from napari_xaimed.evaluation.distances import (
    cldice,
    distance_metrics,
    grouped_distance_metrics,
)
from napari_xaimed.evaluation.errors import (
    error_map,
    missed_map,
    sparse_error_map,
    sparse_missed_map,
)
from napari_xaimed.evaluation.footprints import LabelScan, VoxelCrops, scan, scan_labels
from napari_xaimed.evaluation.instances import (
    check_signs,
    class_instances,
    label_values,
    selected_values,
)
from napari_xaimed.evaluation.label_modes import label_plan
from napari_xaimed.evaluation.matching import (
    Counts,
    check_matching,
    count,
    group_edges,
    match_edges,
)
from napari_xaimed.evaluation.overlap import OverlapTable, score_value
from napari_xaimed.evaluation.parts import check_parts, combined_score, part_scores
from napari_xaimed.evaluation.results import (  # noqa: F401 - also importable from here, as before
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    MATCH_METRICS,
    ClassResult,
    InstanceRow,
    PanopticResult,
)
from napari_xaimed.evaluation.shells import pair_surface_distances
from napari_xaimed.evaluation.voronoi import region_rows_steps, voronoi_regions


def _check_labels(array: Any, name: str, signs: bool = True) -> np.ndarray:
    check_fits_in_memory(array, name)
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise XaimedError(f"{name} must be a 3D (z, y, x) label map, got shape {arr.shape}.")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise XaimedError(
                f"{name} holds non-integer values: a label map needs integer ids. Round or "
                "threshold it first (e.g. probabilities > 0.5)."
            )
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise XaimedError(f"{name} must hold integer labels, got dtype {arr.dtype}.")
    if signs:
        check_signs(arr, name)
    return arr


def check_pair(reference: Any, prediction: Any, matching: str, assignment: str,
               match_metric: str, signs: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validate the two label maps and the matching settings shared by evaluate and autc.

    ``signs=False`` leaves the search for negative labels to :func:`class_maps`, which finds
    them among the nonzero voxels it reads anyway."""
    reference = _check_labels(reference, "reference", signs)
    prediction = _check_labels(prediction, "prediction", signs)
    if reference.shape != prediction.shape:
        raise XaimedError(
            f"reference {reference.shape} and prediction {prediction.shape} differ in shape: "
            "resample the prediction onto the reference grid first."
        )
    check_matching(matching, assignment)
    if match_metric not in MATCH_METRICS:
        raise XaimedError(f"match_metric must be 'iou' or 'dice', got {match_metric!r}.")
    return reference, prediction


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


def class_maps(reference: np.ndarray, prediction: np.ndarray, values: list[int] | None, *,
               instance_input: bool, connectivity: int, read_ids: bool,
               values_apart: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, LabelScan | None]:
    """The maps, ids and (``read_ids``, for instance input) the :class:`LabelScan` of one class.

    With ``read_ids`` the instance ids are read where either map is nonzero
    (:func:`~napari_xaimed.evaluation.footprints.scan_labels`) and the maps are returned as
    they are; when that does not apply (dense maps) or without it, compact maps are built
    (:func:`~napari_xaimed.evaluation.instances.class_instances`) and the scan is None.
    The maps' signs are checked here when ``read_ids`` (``check_pair(signs=False)``).
    ``values_apart``: semantic input's components of each label value are kept apart.
    """
    if read_ids and instance_input:
        # contiguous, so the flat indices of the scan address the maps without copies later
        reference, prediction = np.ascontiguousarray(reference), np.ascontiguousarray(prediction)
        scanned = scan_labels(reference, prediction, selected_values(values))
        if scanned is not None:
            return reference, scanned.ref_ids, prediction, scanned.pred_ids, scanned
    if read_ids:
        check_signs(reference, "reference")
        check_signs(prediction, "prediction")
    ref_map, ref_ids = class_instances(reference, values, instance_input=instance_input,
                                       connectivity=connectivity, values_apart=values_apart)
    pred_map, pred_ids = class_instances(prediction, values, instance_input=instance_input,
                                         connectivity=connectivity, values_apart=values_apart)
    return ref_map, ref_ids, pred_map, pred_ids, None


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


def evaluate_steps(
    reference: np.ndarray,
    prediction: np.ndarray,
    *,
    spacing: tuple[float, float, float] | None = None,
    matching: str = "one_to_one",
    threshold: float = 0.5,
    match_metric: str = "iou",
    instance_input: bool = False,
    classes: Any = None,
    label_mode: str | None = None,
    parts: Any = None,
    voronoi: bool = False,
    assignment: str = "greedy",
    strict: bool = False,
    connectivity: int = 26,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    nsd_tolerance_mm: float = 1.0,
    keep_maps: bool = False,
) -> Steps[PanopticResult]:
    """Generator form of :func:`evaluate` (yields progress, returns the result)."""
    read_ids = instance_input and not voronoi  # Voronoi regions need compact reference maps
    reference, prediction = check_pair(reference, prediction, matching, assignment, match_metric,
                                       signs=not read_ids)
    spacing = as_spacing(spacing)
    if not 0.0 <= float(threshold) <= 1.0:
        raise XaimedError(f"threshold must lie in [0, 1], got {threshold}.")
    metrics = tuple(metrics)
    unknown = set(metrics) - set(DISTANCE_METRICS)
    if unknown:
        raise XaimedError(f"unknown metrics {sorted(unknown)}: choose from {DISTANCE_METRICS}.")
    part_specs = check_parts(parts) if parts is not None else {}
    if part_specs and instance_input:
        raise XaimedError("part-aware evaluation reads things and parts from semantic label "
                          "maps: pass the semantic maps with instance_input=False.")
    plan = label_plan(label_mode, classes, instance_input=instance_input,
                      parts_only=bool(part_specs) and classes is None,
                      values=lambda: label_values(reference, prediction))
    params = {"spacing": spacing, "matching": matching, "threshold": float(threshold),
              "match_metric": match_metric, "instance_input": instance_input,
              "classes": classes, "assignment": assignment, "strict": strict,
              "connectivity": connectivity, "metrics": list(metrics),
              "nsd_tolerance_mm": nsd_tolerance_mm, "parts": parts, "voronoi": voronoi,
              "label_mode": plan.mode, "label_values": plan.values}
    results = {}
    jobs = [(name, values, None) for name, values in plan.classes.items()]
    jobs += [(name, spec["thing"], spec["parts"]) for name, spec in part_specs.items()]
    for name, values, part_spec in jobs:
        yield Progress(0, 1, f"{name}: finding instances")
        ref_map, ref_ids, pred_map, pred_ids, scanned = class_maps(
            reference, prediction, values, instance_input=instance_input,
            connectivity=connectivity, read_ids=read_ids,
            values_apart=plan.values_apart and part_spec is None)
        results[name] = yield from evaluate_class_steps(
            name, ref_map, ref_ids, pred_map, pred_ids, spacing=spacing, matching=matching,
            threshold=float(threshold), match_metric=match_metric, assignment=assignment,
            strict=strict, metrics=metrics, nsd_tolerance_mm=nsd_tolerance_mm,
            keep_maps=keep_maps, part_spec=part_spec, semantic=(reference, prediction),
            voronoi=voronoi, scanned=scanned)
    return PanopticResult(classes=results, params=params)


def evaluate(reference: np.ndarray, prediction: np.ndarray, **kwargs: Any) -> PanopticResult:
    """Panoptic quality of ``prediction`` against ``reference``, per class.

    Parameters
    ----------
    reference, prediction : numpy.ndarray
        3D label maps of one shape: semantic (class values; instances are their connected
        components) or, with ``instance_input=True``, instance ids. Any integer dtype and ids.
    spacing : tuple of float, optional
        Voxel size in mm (``(z, y, x)``) for the distance metrics; 1 mm when omitted.
    matching : {"one_to_one", "many_to_one", "one_to_many"}
        How many partners a segment may take (see :mod:`napari_xaimed.evaluation.matching`).
    threshold : float
        Least matching score of a candidate pair (``>=``; ``strict=True`` for ``>``).
    match_metric : {"iou", "dice"}
    instance_input : bool
    classes : dict, list or None
        ``{"lesion": [1, 2]}`` groups label values into evaluated classes; a list evaluates each
        value as its own class; None: as ``label_mode`` says.
    label_mode : {"per_label", "panoptica", "merged"} or None
        Semantic maps with several label values (see
        :mod:`~napari_xaimed.evaluation.label_modes`): ``"per_label"`` (None, the default)
        evaluates each value found as its own class (named by the value) and adds the mean
        over classes (:meth:`PanopticResult.mean_over_classes`); ``"panoptica"`` keeps each
        value's components apart and matches them across values as one class ``"all"``
        (Panoptica's semantic evaluation without class groups); ``"merged"`` takes the
        components of all nonzero voxels together (one class ``"all"``). With ``classes``
        the groups are the classes and ``"panoptica"`` keeps their values' components apart.
        A map pair with one nonzero value is one class ``"all"`` in every mode. Not for
        instance input. ``params["label_mode"]`` of the result says which mode ran
        (``"binary"`` and ``"instances"`` included).
    assignment : {"greedy", "optimal"}
        one_to_one only: greedy by descending score, or the maximum total score.
    connectivity : {6, 18, 26}
        Of the connected components of semantic input.
    metrics : sequence of str
        Distance metrics per matched group, from :data:`DISTANCE_METRICS` (``hd``, ``hd95``,
        ``hd95_directed``, ``assd``, ``nsd``, ``cldice``); default :data:`DEFAULT_METRICS`:
        all but clDice, which is opt-in (add ``"cldice"``): it only means something for
        tubular structures (vessels, airways, neurons) and costs most of a call. A metric
        left out is NaN in the rows. Dice, IoU and RVD are always computed.
    nsd_tolerance_mm : float
    parts : dict, optional
        Part-aware classes over semantic maps, e.g. ``{"tumor": {"thing": [1, 2, 3], "parts":
        {"core": [2], "necrosis": [3]}}}`` (see :mod:`napari_xaimed.evaluation.parts`): adds
        per-part SQ/PQ and the part-aware PQ to that class's result.
    voronoi : bool
        Also assign every voxel to its nearest reference instance (mm) and evaluate the
        prediction inside each region (``ClassResult.regions``).
    keep_maps : bool
        Keep the error map (see :data:`~napari_xaimed.evaluation.errors.ERROR_CODES`), the
        missed-reference map (every voxel of each FN reference, by its original id, also
        under a prediction) and the Voronoi region map (original reference ids) on each class
        result, for display.

    Returns
    -------
    PanopticResult
        Per class: ``tp, fp, fn, pq, sq, rq`` and rows per matched group.
    """
    return run_steps(evaluate_steps(reference, prediction, **kwargs))
