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
from napari_xaimed.evaluation.footprints import Box, LabelScan
from napari_xaimed.evaluation.instances import label_values
from napari_xaimed.evaluation.label_modes import label_plan
from napari_xaimed.evaluation.matching import check_matching
from napari_xaimed.evaluation.overlap import OverlapTable
from napari_xaimed.evaluation.panoptic import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    MATCH_METRICS,
    PanopticResult,
    evaluate_class_steps,
)
from napari_xaimed.evaluation.slab_distances import slab_distance_metrics
from napari_xaimed.io.lazy import chunks_of, read_slab, slab_size, z_slabs

#: Bytes of each map's voxels per slab by default.
SLAB_BYTES = 32 * 2**20


class LazyCrops:
    """Crops of instances of two (lazy) maps from their bounding boxes, read on demand.

    Implements the ``Crops`` protocol of :mod:`~napari_xaimed.evaluation.footprints` for
    compact numbers ``1..n`` that stand for the ids ``ref_ids`` / ``pred_ids`` of the maps,
    and two methods that need no crop, which
    :func:`~napari_xaimed.evaluation.panoptic.evaluate_class_steps` uses when crops offer
    them: :meth:`distances` (slab by slab) and :meth:`group_centre`. ``slab``: planes per
    slab of those distances (default: about :data:`SLAB_BYTES` of the box).
    """

    def __init__(self, reference: Any, prediction: Any, ref_ids: np.ndarray,
                 pred_ids: np.ndarray, ref_stats: dict[str, np.ndarray],
                 pred_stats: dict[str, np.ndarray], slab: int | None = None):
        self.reference, self.prediction = reference, prediction
        self.ref_ids, self.pred_ids = ref_ids, pred_ids
        self.ref_stats, self.pred_stats = ref_stats, pred_stats
        self.shape = tuple(int(n) for n in reference.shape)
        self.slab = slab

    def box(self, refs: tuple[int, ...], preds: tuple[int, ...], pad: int = 1) -> Box:
        """The joint bounding box of the given compact numbers, padded by ``pad`` voxels and
        clipped to the volume (the box of :meth:`masks`)."""
        lows = [self.ref_stats["low"][r - 1] for r in refs]
        lows += [self.pred_stats["low"][p - 1] for p in preds]
        highs = [self.ref_stats["high"][r - 1] for r in refs]
        highs += [self.pred_stats["high"][p - 1] for p in preds]
        lo = np.maximum(np.min(lows, axis=0) - pad, 0)
        hi = np.minimum(np.max(highs, axis=0) + 1 + pad, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))

    def masks(self, refs: tuple[int, ...], preds: tuple[int, ...], pad: int = 1
              ) -> tuple[Box, np.ndarray, np.ndarray]:
        box = self.box(refs, preds, pad)
        return (box, self._mask(self.reference, box, self.ref_ids, refs),
                self._mask(self.prediction, box, self.pred_ids, preds))

    def distances(self, refs: tuple[int, ...], preds: tuple[int, ...],
                  spacing: tuple[float, float, float], nsd_tolerance_mm: float,
                  wanted: tuple[str, ...]) -> dict[str, float]:
        """The surface distance metrics of :meth:`masks`' two masks
        (:func:`~napari_xaimed.evaluation.distances.distance_metrics`), slab by slab
        (:func:`~napari_xaimed.evaluation.slab_distances.slab_distance_metrics`): memory
        holds a few slabs of the box, not the box, so an organ-sized instance costs no more
        than a small one.

        Parameters
        ----------
        refs, preds : tuple of int
            Compact numbers of the group's reference and prediction instances.
        spacing : tuple of float
        nsd_tolerance_mm : float
        wanted : tuple of str
            Among ``hd``, ``hd95``, ``hd95_directed``, ``assd``, ``nsd``.

        Returns
        -------
        dict
        """
        box = self.box(refs, preds)
        plane = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
        # planes per slab as for the masks (8 bytes a voxel), a multiple of the z chunks (the
        # slabs are cut at multiples of it), so a small instance's box is mostly one slab
        planes = self.slab or slab_size((self.shape[0], 1, plane), 8,
                                        chunks_of(self.reference), SLAB_BYTES)
        return slab_distance_metrics(
            self.reference, self.ref_ids[np.asarray(refs, np.int64) - 1], self.prediction,
            self.pred_ids[np.asarray(preds, np.int64) - 1], box, spacing, nsd_tolerance_mm,
            wanted, planes)

    def group_centre(self, refs: tuple[int, ...]) -> np.ndarray:
        """Centre of mass (voxel coordinates) of the union of the given compact reference
        numbers, from the coordinate sums of the scan."""
        index = np.asarray(refs, np.int64) - 1
        return self.ref_stats["sums"][index].sum(axis=0) / self.ref_stats["sizes"][index].sum()

    def _mask(self, labels: Any, box: Box, ids: np.ndarray, numbers: tuple[int, ...]
              ) -> np.ndarray:
        """The crop ``box`` of where ``labels`` holds the ids of ``numbers``, read a slab at a
        time so only the boolean crop is whole in memory (an organ-sized instance's box can be
        most of the volume)."""
        wanted = ids[np.asarray(numbers, np.int64) - 1]
        z, rest = box[0], box[1:]
        mask = np.zeros(tuple(s.stop - s.start for s in box), bool)
        plane = (rest[0].stop - rest[0].start) * (rest[1].stop - rest[1].start)
        step = max(1, SLAB_BYTES // (8 * plane))
        for start in range(z.start, z.stop, step):
            stop = min(start + step, z.stop)
            block = _read(labels, (slice(start, stop), *rest))
            mask[start - z.start:stop - z.start] = (
                block == wanted[0] if len(wanted) == 1 else np.isin(block, wanted))
        return mask

    def centres(self, side: str, ids: list[int]) -> np.ndarray:
        stats = self.ref_stats if side == "reference" else self.pred_stats
        index = np.asarray(ids, np.int64) - 1
        return stats["sums"][index] / stats["sizes"][index, None]


def _read(array: Any, box: Box) -> np.ndarray:
    block = array[box]
    return np.asarray(block.compute() if hasattr(block, "compute") else block)


def _per_id(values: np.ndarray, coords: np.ndarray) -> dict[str, np.ndarray]:
    """Ids present among ``values`` (nonzero), their counts, coordinate sums, box corners."""
    keep = values != 0
    values, coords = values[keep], coords[keep]
    ids, inverse = np.unique(values, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids)).astype(np.int64)
    sums = np.stack([np.bincount(inverse, coords[:, k].astype(np.float64), len(ids))
                     for k in range(3)], axis=1) if len(ids) else np.zeros((0, 3))
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    ordered = coords[order]
    low = (np.minimum.reduceat(ordered, starts, axis=0) if len(ids)
           else np.zeros((0, 3), np.int64))
    high = (np.maximum.reduceat(ordered, starts, axis=0) if len(ids)
            else np.zeros((0, 3), np.int64))
    return {"ids": ids.astype(np.int64), "sizes": counts, "sums": sums,
            "low": low.astype(np.int64), "high": high.astype(np.int64)}


def _combine(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The per-id tables of all slabs as one, ids ascending."""
    ids = np.concatenate([p["ids"] for p in parts]) if parts else np.zeros(0, np.int64)
    if not len(ids):
        return {"ids": ids, "sizes": np.zeros(0, np.int64), "sums": np.zeros((0, 3)),
                "low": np.zeros((0, 3), np.int64), "high": np.zeros((0, 3), np.int64)}
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))

    def joined(key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts])[order]

    return {"ids": ids[starts],
            "sizes": np.add.reduceat(joined("sizes"), starts),
            "sums": np.add.reduceat(joined("sums"), starts, axis=0),
            "low": np.minimum.reduceat(joined("low"), starts, axis=0),
            "high": np.maximum.reduceat(joined("high"), starts, axis=0)}


def _pairs(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(n, 3)`` rows ``(reference id, prediction id, overlapping voxels)`` of one slab."""
    both = (ref != 0) & (pred != 0)
    if not both.any():
        return np.zeros((0, 3), np.int64)
    ref_u, ref_i = np.unique(ref[both], return_inverse=True)
    pred_u, pred_i = np.unique(pred[both], return_inverse=True)
    keys = ref_i.astype(np.int64) * len(pred_u) + pred_i
    counts = np.bincount(keys)
    found = np.flatnonzero(counts)
    return np.stack([ref_u[found // len(pred_u)].astype(np.int64),
                     pred_u[found % len(pred_u)].astype(np.int64),
                     counts[found]], axis=1)


def _check_map(array: Any, name: str) -> None:
    if len(array.shape) != 3:
        raise XaimedError(f"{name} must be a 3D (z, y, x) label map, got shape "
                          f"{tuple(array.shape)}.")
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        raise XaimedError(f"{name} must hold integer labels for lazy evaluation, got dtype "
                          f"{dtype}: cast it slab by slab (e.g. dask's .astype(np.int32)) "
                          "after checking the values are whole numbers.")


def scan_lazy(reference: Any, prediction: Any, selected: np.ndarray | None = None,
              slab: int | None = None) -> LabelScan:
    """The overlap table and crops of two instance maps of any ids, slab by slab.

    What :func:`~napari_xaimed.evaluation.footprints.scan_labels` gives for maps in memory:
    compact numbers ``1..n`` for the ids present (ascending), instance sizes (index 0 the
    background), the overlapping pairs sorted by (reference, prediction), and crops
    (:class:`LazyCrops`) instead of voxel lists.

    Parameters
    ----------
    reference, prediction : array-like
        Instance maps of one shape (numpy, zarr or dask), non-negative integer ids.
    selected : numpy.ndarray, optional
        Sorted ids that form the class; other ids count as background.
    slab : int, optional
        Planes per slab.

    Returns
    -------
    LabelScan
    """
    shape = tuple(int(n) for n in reference.shape)
    planes = int(slab) if slab else slab_size(
        shape, max(np.dtype(reference.dtype).itemsize, np.dtype(prediction.dtype).itemsize),
        chunks_of(reference), SLAB_BYTES)
    ref_parts, pred_parts, pair_parts = [], [], []
    plane_index = np.indices(shape[1:]).reshape(2, -1).T
    for start, stop in z_slabs(shape[0], planes):
        ref, pred = read_slab(reference, start, stop), read_slab(prediction, start, stop)
        for block, name in ((ref, "reference"), (pred, "prediction")):
            if np.issubdtype(block.dtype, np.signedinteger) and block.size and block.min() < 0:
                raise XaimedError(f"{name} has negative labels ({block.min()}): labels must "
                                  "be >= 0.")
        if selected is not None:
            ref = np.where(np.isin(ref, selected), ref, 0)
            pred = np.where(np.isin(pred, selected), pred, 0)
        flat = np.flatnonzero((ref != 0) | (pred != 0))
        ref_v, pred_v = ref.ravel()[flat], pred.ravel()[flat]
        del ref, pred
        plane = shape[1] * shape[2]
        coords = np.empty((len(flat), 3), np.int64)
        coords[:, 0] = flat // plane + start
        coords[:, 1:] = plane_index[flat % plane]
        ref_parts.append(_per_id(ref_v, coords))
        pred_parts.append(_per_id(pred_v, coords))
        pair_parts.append(_pairs(ref_v, pred_v))
    ref_stats, pred_stats = _combine(ref_parts), _combine(pred_parts)
    ref_ids, pred_ids = ref_stats["ids"], pred_stats["ids"]
    size = int(np.prod(shape))
    ref_sizes = np.concatenate([[size - ref_stats["sizes"].sum()], ref_stats["sizes"]])
    pred_sizes = np.concatenate([[size - pred_stats["sizes"].sum()], pred_stats["sizes"]])
    pairs = np.concatenate(pair_parts)
    if len(pairs):
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        pairs = pairs[order]
        starts = np.flatnonzero(np.concatenate(
            [[True], (pairs[1:, 0] != pairs[:-1, 0]) | (pairs[1:, 1] != pairs[:-1, 1])]))
        inter = np.add.reduceat(pairs[:, 2], starts)
        pairs = pairs[starts]
        pair_ref = np.searchsorted(ref_ids, pairs[:, 0]) + 1
        pair_pred = np.searchsorted(pred_ids, pairs[:, 1]) + 1
    else:
        pair_ref = pair_pred = inter = np.zeros(0, np.int64)
    table = OverlapTable(ref_sizes=ref_sizes.astype(np.int64),
                         pred_sizes=pred_sizes.astype(np.int64),
                         pair_ref=pair_ref.astype(np.int64),
                         pair_pred=pair_pred.astype(np.int64),
                         pair_inter=inter.astype(np.int64))
    crops = LazyCrops(reference, prediction, ref_ids, pred_ids, ref_stats, pred_stats,
                      slab=int(slab) if slab else None)
    return LabelScan(table=table, crops=crops, ref_ids=ref_ids, pred_ids=pred_ids,  # type: ignore[arg-type]
                     ref_values=np.concatenate([[0], ref_ids]),
                     pred_values=np.concatenate([[0], pred_ids]))


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


def label_values_lazy(reference: Any, prediction: Any, slab: int | None = None) -> np.ndarray:
    """The sorted nonzero label values of two maps, slab by slab (negative labels refused)."""
    found = [np.zeros(0, np.int64)]
    for array, name in ((reference, "reference"), (prediction, "prediction")):
        shape = tuple(int(n) for n in array.shape)
        planes = int(slab) if slab else slab_size(shape, np.dtype(array.dtype).itemsize,
                                                  chunks_of(array), SLAB_BYTES)
        for start, stop in z_slabs(shape[0], planes):
            block = read_slab(array, start, stop)
            if np.issubdtype(block.dtype, np.signedinteger) and block.size and block.min() < 0:
                raise XaimedError(f"{name} has negative labels ({block.min()}): labels must "
                                  "be >= 0.")
            found.append(label_values(block))
    return np.unique(np.concatenate(found))


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
