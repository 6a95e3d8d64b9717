"""The slab-by-slab scan of two label maps larger than memory, for
:func:`~napari_xaimed.evaluation.lazy.evaluate_lazy`: each instance's voxel count, bounding box
and coordinate sums, and the intersection of every overlapping (reference, prediction) pair, as
the :class:`~napari_xaimed.evaluation.footprints.LabelScan` the in-memory code scores, with
crops (:class:`LazyCrops`) read from the maps on demand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.evaluation.footprints import Box, LabelScan
from napari_xaimed.evaluation.instances import label_values
from napari_xaimed.evaluation.overlap import OverlapTable
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
