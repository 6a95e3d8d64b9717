"""Panoptic evaluation of label maps larger than memory, from tables read slab by slab.

One pass over both maps, one slab of planes at a time, collects what
:func:`~napari_xaimed.evaluation.evaluate` needs from the whole volume: each instance's voxel
count, bounding box and coordinate sums, and the intersection of every overlapping
(reference, prediction) pair. From that :class:`~napari_xaimed.evaluation.overlap.OverlapTable`
the matching, the counts, PQ/SQ/RQ and each group's Dice, IoU and RVD are computed by the
in-memory code itself (:func:`~napari_xaimed.evaluation.panoptic.evaluate_class_steps`), so
they are exactly equal. Surface distances (HD, HD95, ASSD, NSD) are measured slab by slab
over each group's bounding box (padded by one voxel, as in memory) by
:mod:`~napari_xaimed.evaluation.slab_distances`: the in-memory values, with a few slabs in
memory however large the instance. clDice still reads the group's whole box crop (a boolean
mask per side) for the skeletons: leave it out of ``metrics`` for organ-sized instances.

Semantic maps (``instance_input=False``) get their instances from
:func:`~napari_xaimed.segmentation.lazy.label_lazy` (the connected components the in-memory
path finds, numbered alike), written to Zarr stores in ``workdir``.

Not done lazily (an :class:`~napari_xaimed.XaimedError` says so): part-aware evaluation,
Voronoi regions and error maps, which need whole-volume maps.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import run_steps
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.evaluation.label_modes import label_plan
from napari_xaimed.evaluation.matching import check_matching
from napari_xaimed.evaluation.per_class import evaluate_class_steps
from napari_xaimed.evaluation.results import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    MATCH_METRICS,
    PanopticResult,
)
from napari_xaimed.evaluation.slab_scan import (  # noqa: F401 - also importable from here, as before
    SLAB_BYTES,
    LazyCrops,
    label_values_lazy,
    scan_lazy,
)


def _check_map(array: Any, name: str) -> None:
    if len(array.shape) != 3:
        raise XaimedError(f"{name} must be a 3D (z, y, x) label map, got shape "
                          f"{tuple(array.shape)}.")
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        raise XaimedError(f"{name} must hold integer labels for lazy evaluation, got dtype "
                          f"{dtype}: cast it slab by slab (e.g. dask's .astype(np.int32)) "
                          "after checking the values are whole numbers.")


def _components(labels: Any, values: list[int] | None, out: Path, connectivity: int,
                slab: int | None, values_apart: bool = False) -> Any:
    """Connected components of the class's voxels of a semantic map, in a Zarr store
    (``values_apart``: the components of each label value kept apart)."""
    import dask.array as da

    from napari_xaimed.components.lazy import label_lazy

    lazy = labels if hasattr(labels, "map_blocks") else da.from_array(
        labels, chunks=(slab or max(1, int(labels.shape[0]) // 8), *labels.shape[1:]))
    if values_apart:
        mask = lazy if values is None else da.where(da.isin(lazy, np.asarray(values)), lazy, 0)
    else:
        mask = lazy != 0 if values is None else da.isin(lazy, np.asarray(values))
    components, _ = label_lazy(mask, out, connectivity=connectivity, slab=slab,
                               values_apart=values_apart)
    return components


def evaluate_lazy(
    reference: Any,
    prediction: Any,
    *,
    spacing: tuple[float, float, float] | None = None,
    matching: str = "one_to_one",
    threshold: float = 0.5,
    match_metric: str = "iou",
    instance_input: bool = False,
    classes: Any = None,
    label_mode: str | None = None,
    assignment: str = "greedy",
    strict: bool = False,
    connectivity: int = 26,
    metrics: tuple[str, ...] | list[str] = DEFAULT_METRICS,
    nsd_tolerance_mm: float = 1.0,
    slab: int | None = None,
    workdir: str | Path | None = None,
    **unsupported: Any,
) -> PanopticResult:
    """:func:`~napari_xaimed.evaluation.evaluate` for label maps larger than memory.

    The same parameters and the same :class:`~napari_xaimed.evaluation.PanopticResult`
    (counts, PQ/SQ/RQ, per-group Dice/IoU/RVD exactly; surface distances slab by slab with
    the in-memory values), from one pass over the maps slab by slab; memory holds a few slabs
    and the per-instance tables. clDice (opt-in, as in ``evaluate``) reads each group's whole
    box crop: leave it out of ``metrics`` for instances too large for one.

    Parameters
    ----------
    reference, prediction : array-like
        3D integer label maps of one shape: dask (e.g. ``read_volume("ref.zarr").data``),
        zarr, memory map or numpy.
    spacing, matching, threshold, match_metric, instance_input, classes, label_mode,
    assignment, strict, connectivity, metrics, nsd_tolerance_mm
        As for :func:`~napari_xaimed.evaluation.evaluate`; the default ``label_mode``
        (each label value its own class) first reads the maps once, slab by slab, for the
        label values present.
    slab : int, optional
        Planes per slab (of the scan and of the surface distances).
    workdir : str or pathlib.Path, optional
        Semantic input: the folder in which the connected components are written (Zarr
        stores in a temporary subfolder, removed afterwards); default: the system's
        temporary folder.
    **unsupported
        ``parts``, ``voronoi`` and ``keep_maps`` need whole-volume maps: refused unless off.

    Returns
    -------
    PanopticResult
        ``params["lazy"]`` is True.

    Raises
    ------
    XaimedError
        For maps of different shapes or non-integer dtype, negative labels, invalid settings,
        or a whole-volume option.
    """
    for key in ("parts", "voronoi", "keep_maps"):
        if unsupported.pop(key, None) not in (None, False):
            raise XaimedError(f"{key}= needs the whole label maps in memory and is not "
                              "available for volumes larger than memory: evaluate a crop "
                              "(reference[z0:z1], prediction[z0:z1]) with evaluate().")
    if unsupported:
        raise XaimedError(f"evaluate_lazy does not take {', '.join(sorted(unsupported))}.")
    _check_map(reference, "reference")
    _check_map(prediction, "prediction")
    if tuple(reference.shape) != tuple(prediction.shape):
        raise XaimedError(f"reference {tuple(reference.shape)} and prediction "
                          f"{tuple(prediction.shape)} differ in shape: resample the prediction "
                          "onto the reference grid first.")
    check_matching(matching, assignment)
    if match_metric not in MATCH_METRICS:
        raise XaimedError(f"match_metric must be 'iou' or 'dice', got {match_metric!r}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise XaimedError(f"threshold must lie in [0, 1], got {threshold}.")
    metrics = tuple(metrics)
    unknown = set(metrics) - set(DISTANCE_METRICS)
    if unknown:
        raise XaimedError(f"unknown metrics {sorted(unknown)}: choose from {DISTANCE_METRICS}.")
    spacing = as_spacing(spacing)
    plan = label_plan(label_mode, classes, instance_input=instance_input,
                      values=lambda: label_values_lazy(reference, prediction, slab))
    params = {"spacing": spacing, "matching": matching, "threshold": float(threshold),
              "match_metric": match_metric, "instance_input": instance_input,
              "classes": classes, "assignment": assignment, "strict": strict,
              "connectivity": connectivity, "metrics": list(metrics),
              "nsd_tolerance_mm": nsd_tolerance_mm, "parts": None, "voronoi": False,
              "label_mode": plan.mode, "label_values": plan.values, "lazy": True}
    # semantic input: components in a fresh folder (inside workdir), removed at the end
    temporary = None if instance_input else tempfile.TemporaryDirectory(
        prefix="xaimed-eval-", dir=None if workdir is None else str(workdir))
    folder = Path(temporary.name) if temporary is not None else Path(".")
    try:
        results = {}
        for index, (name, values) in enumerate(plan.classes.items()):
            if instance_input:
                selected = (None if values is None
                            else np.asarray(sorted(set(values)), np.int64))
                ref_map, pred_map = reference, prediction
            else:
                selected = None
                ref_map = _components(reference, values, folder / f"reference-{index}.zarr",
                                      connectivity, slab, plan.values_apart)
                pred_map = _components(prediction, values, folder / f"prediction-{index}.zarr",
                                       connectivity, slab, plan.values_apart)
            scanned = scan_lazy(ref_map, pred_map, selected, slab)
            results[name] = run_steps(evaluate_class_steps(
                name, ref_map, scanned.ref_ids, pred_map, scanned.pred_ids, spacing=spacing,
                matching=matching, threshold=float(threshold), match_metric=match_metric,
                assignment=assignment, strict=strict, metrics=metrics,
                nsd_tolerance_mm=nsd_tolerance_mm, scanned=scanned))
    finally:
        if temporary is not None:
            temporary.cleanup()
    return PanopticResult(classes=results, params=params)
