"""Where each instance lies: the overlap table and small crops of instance masks.

Two ways to the same answers, picked by how much of the volume is foreground:

- **sparse** (foreground at most :data:`SPARSE_FRACTION` of the voxels, the usual case for
  lesions, nodules, cells): one pass finds the foreground voxels of either map; instance sizes,
  the overlap table and each instance's voxel list come from that short list alone. A group's
  crop is built from its voxel lists, without scanning the volume again. Instance maps of any
  ids need no compact copies for it (:func:`scan_labels`): only the foreground's ids are
  renumbered.
- **dense** (e.g. whole organs): the overlap table is built slab by slab
  (:func:`~napari_xaimed.evaluation.overlap.overlap_table`) and crops come from
  ``scipy.ndimage.find_objects`` boxes; the voxel lists would cost more memory than the maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed.evaluation.foreground import foreground
from napari_xaimed.evaluation.instances import check_signs, compact_values
from napari_xaimed.evaluation.overlap import OverlapTable, overlap_table, pair_table

SPARSE_FRACTION = 0.125
# Voxels per step where a step makes several temporaries per voxel.
CHUNK = 1 << 14

Box = tuple[slice, ...]


class Crops(Protocol):
    """Masks of a group of reference and prediction instances, cropped to their joint box."""

    def masks(self, refs: tuple[int, ...], preds: tuple[int, ...], pad: int = 1
              ) -> tuple[Box, np.ndarray, np.ndarray]:
        """``(box, reference mask, prediction mask)``: the box (padded by ``pad`` voxels,
        clipped to the volume) holds every voxel of the given compact instance numbers."""
        ...

    def centres(self, side: str, ids: list[int]) -> np.ndarray:
        """Centre of mass (voxel coordinates, ``(len(ids), 3)``) of each given compact
        ``"reference"`` or ``"prediction"`` instance."""
        ...


class BoxCrops:
    """Crops from ``find_objects`` boxes of the two compact maps (the dense path)."""

    def __init__(self, ref_map: np.ndarray, pred_map: np.ndarray, n_ref: int, n_pred: int):
        self.ref_map, self.pred_map = ref_map, pred_map
        self.ref_boxes = ndi.find_objects(ref_map, max_label=n_ref)
        self.pred_boxes = ndi.find_objects(pred_map, max_label=n_pred)

    def masks(self, refs, preds, pad=1):
        boxes = [self.ref_boxes[r - 1] for r in refs] + [self.pred_boxes[p - 1] for p in preds]
        boxes = [b for b in boxes if b is not None]
        shape = self.ref_map.shape
        box = tuple(
            slice(max(min(b[ax].start for b in boxes) - pad, 0),
                  min(max(b[ax].stop for b in boxes) + pad, shape[ax]))
            for ax in range(len(shape))
        )
        return box, np.isin(self.ref_map[box], refs), np.isin(self.pred_map[box], preds)

    def centres(self, side: str, ids: list[int]) -> np.ndarray:
        """Centre of mass of each instance, from its ``find_objects`` box alone."""
        label_map, boxes = ((self.ref_map, self.ref_boxes) if side == "reference"
                            else (self.pred_map, self.pred_boxes))
        out = np.full((len(ids), 3), np.nan)
        for i, k in enumerate(ids):
            box = boxes[k - 1]
            if box is not None:
                out[i] = np.asarray(ndi.center_of_mass(label_map[box] == k)) + [
                    b.start for b in box]
        return out


class VoxelCrops:
    """Crops from each instance's list of flat voxel indices (the sparse path).

    ``ref_index[ref_starts[k]:ref_starts[k + 1]]`` are the flat indices of reference ``k``;
    the same for predictions.
    """

    def __init__(self, shape: tuple[int, ...], ref_index: np.ndarray, ref_starts: np.ndarray,
                 pred_index: np.ndarray, pred_starts: np.ndarray):
        self.shape = shape
        self.ref_index, self.ref_starts = ref_index, ref_starts
        self.pred_index, self.pred_starts = pred_index, pred_starts

    def _coords(self, index: np.ndarray, starts: np.ndarray, ids) -> np.ndarray:
        flat = np.concatenate([index[starts[k]:starts[k + 1]] for k in ids]) if ids else index[:0]
        return np.stack(np.unravel_index(flat, self.shape), axis=1)

    def reference_centres(self, groups: list[tuple[int, ...]]) -> np.ndarray:
        """Centre (voxel coordinates, ``(len(groups), 3)``) of the union of each group of
        compact reference numbers, from the voxel lists (no crops)."""
        sizes = np.diff(self.ref_starts)
        owner = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        sums = np.zeros((len(sizes), 3))
        plane = self.shape[1] * self.shape[2]
        # From the first instance's voxels on (the background's, if listed, are not needed);
        # chunks keep the temporaries small.
        for start in range(int(self.ref_starts[1]), len(owner), CHUNK):
            index, who = self.ref_index[start:start + CHUNK], owner[start:start + CHUNK]
            z, rest = np.divmod(index, plane)
            y, x = np.divmod(rest, self.shape[2])
            for axis, coord in enumerate((z, y, x)):
                sums[:, axis] += np.bincount(who, coord, len(sizes))
        members = np.concatenate([list(g) for g in groups]).astype(np.int64)
        which = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
        total = np.zeros((len(groups), 3))
        np.add.at(total, which, sums[members])
        return total / np.bincount(which, sizes[members], len(groups))[:, None]

    def centres(self, side: str, ids: list[int]) -> np.ndarray:
        """Centre of mass of each instance, from the voxel lists of those instances alone."""
        index, starts = ((self.ref_index, self.ref_starts) if side == "reference"
                         else (self.pred_index, self.pred_starts))
        ids = np.asarray(ids, np.int64)
        sizes = starts[ids + 1] - starts[ids]
        flat = (np.concatenate([index[starts[k]:starts[k + 1]] for k in ids]) if len(ids)
                else index[:0])
        owner = np.repeat(np.arange(len(ids)), sizes)
        sums = np.zeros((len(ids), 3))
        plane = self.shape[1] * self.shape[2]
        for start in range(0, len(flat), CHUNK):
            chunk, who = flat[start:start + CHUNK], owner[start:start + CHUNK]
            z, rest = np.divmod(chunk, plane)
            y, x = np.divmod(rest, self.shape[2])
            for axis, coord in enumerate((z, y, x)):
                sums[:, axis] += np.bincount(who, coord, len(ids))
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / sizes[:, None]

    def masks(self, refs, preds, pad=1):
        ref_xyz = self._coords(self.ref_index, self.ref_starts, refs)
        pred_xyz = self._coords(self.pred_index, self.pred_starts, preds)
        both = np.concatenate([ref_xyz, pred_xyz])
        lo = np.maximum(both.min(axis=0) - pad, 0)
        hi = np.minimum(both.max(axis=0) + 1 + pad, self.shape)
        ref_mask = np.zeros(tuple(hi - lo), bool)
        pred_mask = np.zeros(tuple(hi - lo), bool)
        ref_mask[tuple((ref_xyz - lo).T)] = True
        pred_mask[tuple((pred_xyz - lo).T)] = True
        return tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)), ref_mask, pred_mask


def _grouped(values: np.ndarray, index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``index`` sorted by ``values`` (a stable sort: radix for uint16) and where each value's
    run starts (``starts[k]`` for value ``k``, ``n + 2`` entries)."""
    order = np.argsort(values, kind="stable")
    starts = np.zeros(n + 2, np.int64)
    np.cumsum(np.bincount(values, minlength=n + 1), out=starts[1:])
    return index[order], starts


def _sparse_scan(shape: tuple[int, ...], fg: np.ndarray, ref: np.ndarray, pred: np.ndarray,
                 n_ref: int, n_pred: int) -> tuple[OverlapTable, VoxelCrops]:
    """Table and crops from the compact numbers ``ref``/``pred`` at the voxels ``fg``, which
    hold every nonzero voxel of both maps."""
    size = int(np.prod(shape))
    ref_sizes = np.bincount(ref, minlength=n_ref + 1).astype(np.int64)
    pred_sizes = np.bincount(pred, minlength=n_pred + 1).astype(np.int64)
    ref_sizes[0] = size - ref_sizes[1:].sum()
    pred_sizes[0] = size - pred_sizes[1:].sum()
    both = ref > 0
    both &= pred > 0
    both = np.flatnonzero(both)
    stride = n_pred + 1
    pair_ref, pair_pred, pair_inter = pair_table(
        ref.take(both).astype(np.int64) * stride + pred.take(both), n_ref, n_pred)
    table = OverlapTable(ref_sizes=ref_sizes, pred_sizes=pred_sizes, pair_ref=pair_ref,
                         pair_pred=pair_pred, pair_inter=pair_inter)
    ref_index, ref_starts = _grouped(ref, fg, n_ref)
    pred_index, pred_starts = _grouped(pred, fg, n_pred)
    return table, VoxelCrops(shape, ref_index, ref_starts, pred_index, pred_starts)


def scan(ref_map: np.ndarray, pred_map: np.ndarray, n_ref: int, n_pred: int
         ) -> tuple[OverlapTable, Crops]:
    """The overlap table of two compact instance maps and a way to crop their instances.

    Parameters
    ----------
    ref_map, pred_map : numpy.ndarray
        Compact instance maps (values ``0..n_ref`` and ``0..n_pred``) of one shape.
    n_ref, n_pred : int

    Returns
    -------
    (OverlapTable, Crops)
    """
    found = foreground(ref_map, pred_map, int(SPARSE_FRACTION * ref_map.size))
    if found is None:
        return (overlap_table(ref_map, pred_map, n_ref, n_pred),
                BoxCrops(ref_map, pred_map, n_ref, n_pred))
    return _sparse_scan(ref_map.shape, *found, n_ref, n_pred)


@dataclass
class LabelScan:
    """What :func:`scan_labels` reads from two instance maps of any ids.

    ``ref_values[k]`` is the value that compact reference number ``k`` has in the reference map
    (``ref_values[0] == 0``), in the map's dtype; the same for predictions. Code that compares
    map values with an instance (surfaces, nearest partner voxels) reads the maps as they are
    through these, so no compact copy of either map is made.
    """

    table: OverlapTable
    crops: VoxelCrops
    ref_ids: np.ndarray
    pred_ids: np.ndarray
    ref_values: np.ndarray
    pred_values: np.ndarray


def scan_labels(reference: np.ndarray, prediction: np.ndarray,
                selected: np.ndarray | None = None,
                names: tuple[str, str] = ("reference", "prediction")) -> LabelScan | None:
    """The overlap table and crops of two instance maps straight from their ids, in one pass.

    The sparse path of :func:`scan` without the compact maps: the voxels nonzero in either map
    and their ids are found in one read of both maps
    (:func:`~napari_xaimed.evaluation.foreground.foreground`), and only those ids are renumbered
    (:func:`~napari_xaimed.evaluation.instances.compact_values`, the numbering of
    ``compact_labels``), so nothing volume-sized is written.

    Parameters
    ----------
    reference, prediction : numpy.ndarray
        Instance maps of one shape, non-negative integer ids of any dtype.
    selected : numpy.ndarray, optional
        Sorted ids that form the class; other ids count as background.
    names : (str, str)
        What to call the two maps in the error raised for negative labels (found among the
        nonzero voxels, so no separate pass looks for them).

    Returns
    -------
    LabelScan or None
        None when more than :data:`SPARSE_FRACTION` of the voxels are nonzero in either map
        (other ids of the class selection included): compact maps and :func:`scan` are then
        the faster way.
    """
    reference = np.ascontiguousarray(reference)
    prediction = np.ascontiguousarray(prediction)
    found = foreground(reference, prediction, int(SPARSE_FRACTION * reference.size))
    if found is None:
        return None
    fg, ref_values, pred_values = found
    check_signs(ref_values, names[0])
    check_signs(pred_values, names[1])
    ref, ref_ids = compact_values(ref_values, selected)
    pred, pred_ids = compact_values(pred_values, selected)
    table, crops = _sparse_scan(reference.shape, fg, ref, pred, len(ref_ids), len(pred_ids))
    return LabelScan(table=table, crops=crops, ref_ids=ref_ids, pred_ids=pred_ids,
                     ref_values=np.concatenate([[0], ref_ids]).astype(reference.dtype),
                     pred_values=np.concatenate([[0], pred_ids]).astype(prediction.dtype))
