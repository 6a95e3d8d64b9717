"""The error map: every voxel of both segmentations marked by what the matching made of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_xaimed.evaluation.matching import Group

if TYPE_CHECKING:
    from napari_xaimed.evaluation.footprints import VoxelCrops

#: Values of the error map and what they mean.
ERROR_CODES = {1: "TP", 2: "FP", 3: "FN", 4: "merged fragment"}
TP, FP, FN, MERGED = 1, 2, 3, 4


def _codes(n_ref: int, pred_sizes: np.ndarray, accepted: tuple[Group, ...]
           ) -> tuple[np.ndarray, np.ndarray]:
    """The code of every compact prediction number and which references were missed."""
    pred_code = np.full(len(pred_sizes), FP, np.uint8)
    pred_code[0] = 0
    ref_missed = np.ones(n_ref + 1, bool)
    ref_missed[0] = False
    for group in accepted:
        preds = list(group.preds)
        largest = preds[int(np.argmax(pred_sizes[preds]))]
        pred_code[preds] = MERGED
        pred_code[largest] = TP
        ref_missed[list(group.refs)] = False
    return pred_code, ref_missed


def error_map(ref_map: np.ndarray, pred_map: np.ndarray, n_ref: int, n_pred: int,
              accepted: tuple[Group, ...]) -> np.ndarray:
    """uint8 map: matched prediction voxels TP, unmatched prediction voxels FP, voxels of
    unmatched references not covered by any prediction FN; in a group of several predictions
    (a split matched many-to-one) the largest is TP and the others are merged fragments.

    Built with two lookup tables, so it costs two passes over the volume.
    """
    sizes = (np.bincount(pred_map.ravel(), minlength=n_pred + 1) if accepted
             else np.zeros(n_pred + 1, np.int64))
    pred_code, ref_missed = _codes(n_ref, sizes, accepted)
    out = pred_code[pred_map]
    out[(out == 0) & ref_missed[ref_map]] = FN
    return out


def sparse_error_map(crops: VoxelCrops, pred_sizes: np.ndarray, n_ref: int,
                     accepted: tuple[Group, ...]) -> np.ndarray:
    """:func:`error_map` from the instances' voxel lists: only instance voxels are written."""
    pred_code, ref_missed = _codes(n_ref, pred_sizes, accepted)
    out = np.zeros(crops.shape, np.uint8)
    flat = out.reshape(-1)
    starts = crops.pred_starts
    flat[crops.pred_index[starts[1]:]] = np.repeat(pred_code[1:], np.diff(starts[1:]))
    missed = np.flatnonzero(ref_missed)
    if missed.size:
        voxels = np.concatenate([crops.ref_index[crops.ref_starts[k]:crops.ref_starts[k + 1]]
                                 for k in missed])
        flat[voxels[flat[voxels] == 0]] = FN
    return out
