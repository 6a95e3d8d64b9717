"""Panoptic quality of a prediction against a reference, per class, with per-instance metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing, check_fits_in_memory
from napari_xaimed.evaluation.footprints import LabelScan, scan_labels
from napari_xaimed.evaluation.instances import (
    check_signs,
    class_instances,
    label_values,
    selected_values,
)
from napari_xaimed.evaluation.label_modes import label_plan
from napari_xaimed.evaluation.lazy import evaluate_lazy
from napari_xaimed.evaluation.matching import check_matching
from napari_xaimed.evaluation.parts import check_parts
from napari_xaimed.evaluation.per_class import (  # noqa: F401 - also importable from here, as before
    evaluate_class_steps,
    match_table,
)
from napari_xaimed.evaluation.results import (  # noqa: F401 - also importable from here, as before
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    MATCH_METRICS,
    ClassResult,
    InstanceRow,
    PanopticResult,
)


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
    slab: int | None = None,
    workdir: str | Path | None = None,
) -> Steps[PanopticResult]:
    """Generator form of :func:`evaluate` (yields progress, returns the result)."""
    if is_lazy(reference) or is_lazy(prediction):  # larger than memory: slab by slab
        yield Progress(0, 1, "evaluating slab by slab")
        return evaluate_lazy(
            reference, prediction, spacing=spacing, matching=matching, threshold=threshold,
            match_metric=match_metric, instance_input=instance_input, classes=classes,
            label_mode=label_mode, parts=parts, voronoi=voronoi, assignment=assignment,
            strict=strict, connectivity=connectivity, metrics=metrics,
            nsd_tolerance_mm=nsd_tolerance_mm, keep_maps=keep_maps, slab=slab, workdir=workdir)
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
    reference, prediction : numpy.ndarray or dask.array.Array
        3D label maps of one shape: semantic (class values; instances are their connected
        components) or, with ``instance_input=True``, instance ids. Any integer dtype and ids.
        If either is a dask array (a Zarr store or a NIfTI larger than memory), both are
        evaluated slab by slab by :func:`~napari_xaimed.evaluation.evaluate_lazy`: the same
        numbers, without ``parts``, ``voronoi`` and ``keep_maps`` (an
        :class:`~napari_xaimed.XaimedError` says so).
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
    slab, workdir
        Dask inputs only: planes per slab, and the folder for the connected components of
        semantic maps (see :func:`~napari_xaimed.evaluation.evaluate_lazy`).

    Returns
    -------
    PanopticResult
        Per class: ``tp, fp, fn, pq, sq, rq`` and rows per matched group.
    """
    return run_steps(evaluate_steps(reference, prediction, **kwargs))
