"""The error map: every voxel of both segmentations marked by what the matching made of it."""

from __future__ import annotations

import numpy as np

from napari_xaimed.evaluation.matching import Group

#: Values of the error map and what they mean.
ERROR_CODES = {1: "TP", 2: "FP", 3: "FN", 4: "merged fragment"}
TP, FP, FN, MERGED = 1, 2, 3, 4


def error_map(ref_map: np.ndarray, pred_map: np.ndarray, n_ref: int, n_pred: int,
              accepted: tuple[Group, ...]) -> np.ndarray:
    """uint8 map: matched prediction voxels TP, unmatched prediction voxels FP, voxels of
    unmatched references not covered by any prediction FN; in a group of several predictions
    (a split matched many-to-one) the largest is TP and the others are merged fragments.

    Built with two lookup tables, so it costs two passes over the volume.
    """
    pred_code = np.full(n_pred + 1, FP, np.uint8)
    pred_code[0] = 0
    ref_missed = np.ones(n_ref + 1, bool)
    ref_missed[0] = False
    sizes = np.bincount(pred_map.ravel(), minlength=n_pred + 1) if accepted else None
    for group in accepted:
        preds = list(group.preds)
        largest = preds[int(np.argmax(sizes[preds]))]
        pred_code[preds] = MERGED
        pred_code[largest] = TP
        ref_missed[list(group.refs)] = False
    out = pred_code[pred_map]
    out[(out == 0) & ref_missed[ref_map]] = FN
    return out
