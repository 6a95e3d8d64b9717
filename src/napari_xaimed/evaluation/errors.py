"""The error map: every voxel of both segmentations marked by what the matching made of it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from napari_xaimed.evaluation.matching import Group

if TYPE_CHECKING:
    from napari_xaimed.evaluation.footprints import VoxelCrops
    from napari_xaimed.evaluation.results import ClassResult, PanopticResult

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


def _id_dtype(highest: int) -> type:
    if highest < 2**16:
        return np.uint16
    return np.uint32 if highest < 2**32 else np.int64


def missed_map(ref_map: np.ndarray, missed: list[int], ids: np.ndarray) -> np.ndarray:
    """Every voxel of the missed (FN) references, by original id, whatever covers them.

    The error map paints a voxel by the prediction first, so a missed reference under a
    prediction matched to another reference shows that prediction's code there; this map
    shows the reference itself.

    Parameters
    ----------
    ref_map : numpy.ndarray
        The compact reference map (numbers ``1..n``).
    missed : list of int
        Compact numbers of the missed references.
    ids : numpy.ndarray
        Original id of each compact number (``ids[0]`` = 0).

    Returns
    -------
    numpy.ndarray
        uint16, uint32 or int64 (the smallest that holds the ids); 0 elsewhere.
    """
    highest = int(ids[missed].max()) if missed else 0
    lut = np.zeros(len(ids), _id_dtype(highest))
    lut[missed] = ids[missed]
    return lut[ref_map]


def sparse_missed_map(crops: VoxelCrops, missed: list[int], ids: np.ndarray) -> np.ndarray:
    """:func:`missed_map` from the instances' voxel lists."""
    highest = int(ids[missed].max()) if missed else 0
    out = np.zeros(crops.shape, _id_dtype(highest))
    flat = out.reshape(-1)
    starts = crops.ref_starts
    for k in missed:
        flat[crops.ref_index[starts[k]:starts[k + 1]]] = ids[k]
    return out


def combine_error_maps(maps: Sequence[np.ndarray]) -> np.ndarray:
    """One error map of several classes whose prediction values are disjoint (each label value
    its own class): every class's prediction codes first, then FN where none is."""
    out = np.zeros(maps[0].shape, np.uint8)
    for codes in maps:
        painted = (codes != 0) & (codes != FN)
        out[painted] = codes[painted]
    for codes in maps:
        out[(out == 0) & (codes == FN)] = FN
    return out


def combine_missed_maps(classes: Sequence[ClassResult]
                        ) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """The missed references of several classes as one label map.

    Label ``k`` (from 1) is the ``k``-th entry ``(class name, reference id)`` of the list
    returned with it: classes in order, each class's ``missed_reference_ids`` in order.
    Reference ids of different classes may be equal (component numbers); the labels are not.

    Parameters
    ----------
    classes : sequence of ClassResult
        Evaluated with ``keep_maps=True``.

    Returns
    -------
    (numpy.ndarray, list of (str, int))
    """
    entries = [(c.name, int(rid)) for c in classes for rid in c.missed_reference_ids]
    out = np.zeros(classes[0].missed_map.shape, _id_dtype(len(entries)))
    flat, offset = out.reshape(-1), 0
    for c in classes:
        ids = np.asarray(c.missed_reference_ids, np.int64)
        if ids.size:
            where = np.flatnonzero(c.missed_map)
            order = np.argsort(ids, kind="stable")
            found = np.searchsorted(ids[order], c.missed_map.reshape(-1)[where])
            flat[where] = offset + 1 + order[found]
        offset += ids.size
    return out, entries


def class_layers(classes: Sequence[ClassResult]
                 ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, int]]]:
    """What the error layers show for some classes evaluated with ``keep_maps=True``.

    Returns the error map (:func:`combine_error_maps` of the classes', or the one class's
    own), the missed-reference labels and their ``(class, reference id)`` entries
    (:func:`combine_missed_maps`). Every TP, FP and FN row of the classes' tables is in them
    with its own category: TP and FP groups by their prediction voxels in the error map, each
    missed reference by all its voxels in the missed labels (also where a prediction, matched
    to another reference, covers it and the error map shows that prediction).
    """
    errors = (classes[0].error_map if len(classes) == 1
              else combine_error_maps([c.error_map for c in classes]))
    missed, entries = combine_missed_maps(classes)
    return errors, missed, entries


def evaluation_map(result: PanopticResult, output: str = "error_map",
                   class_name: str | None = None, all_classes: bool = False) -> np.ndarray:
    """One map of an evaluation run with ``keep_maps=True``, as the evaluation widget shows it.

    Parameters
    ----------
    result : PanopticResult
    output : {"error_map", "missed_map", "region_map"}
        The error map (:data:`ERROR_CODES`), the missed references' labels or the Voronoi
        regions.
    class_name : str, optional
        The class; None (or a name the result lacks) for its first class.
    all_classes : bool
        One map for all classes (the widget's layer when each label value is its own class).
    """
    from napari_xaimed._core.errors import XaimedError

    if output not in ("error_map", "missed_map", "region_map"):
        raise XaimedError(f"unknown evaluation output {output!r}: error_map, missed_map or "
                          "region_map.")
    if all_classes and output != "region_map":
        members = list(result.classes.values())
    else:
        members = [result.classes[class_name] if class_name in result.classes
                   else next(iter(result.classes.values()))]
    if output == "region_map":
        return members[0].region_map
    errors, missed, _ = class_layers(members)
    return errors if output == "error_map" else missed
