"""The error layers show every row of the table as what the table says it is (issue 27 item 9).

A reference the table lists as missed (FN) can lie under a prediction matched to another
reference; the error map paints that prediction (TP) there, so the missed-reference labels
(``missed_map``, combined by :func:`~napari_xaimed.evaluation.errors.class_layers`) must hold
it. The voxels of each row come from the arrays built here (or scipy's components), not from
the evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed.evaluation import evaluate
from napari_xaimed.evaluation.errors import FN, FP, MERGED, TP, class_layers


def merged_case(shape=(12, 22, 24)):
    """Reference A (id 4) and a small B (id 9) beside it; one prediction P (id 3) covers both
    (IoU with A 512/768: A is TP, B is FN under P). C (id 12) is missed where nothing covers
    it, Q (id 5) is a false positive, and S (id 8) with its fragment F (id 6) matches D (id 2)
    many-to-one (at a threshold of 0.2)."""
    ref = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    ref[2:10, 2:10, 2:10] = 4       # A
    ref[2:10, 12:14, 2:10] = 9      # B, under P
    pred[2:10, 2:14, 2:10] = 3      # P over A, the gap and B
    ref[2:6, 16:20, 12:16] = 12     # C, uncovered
    pred[7:10, 16:19, 20:23] = 5    # Q, false positive
    ref[2:10, 2:10, 14:22] = 2      # D
    pred[2:10, 2:10, 14:20] = 8     # S: 384 of D's 512 voxels
    pred[2:10, 2:10, 20:22] = 6     # F: the rest of D
    return ref, pred


def check_rows(classes, errors, missed, entries, voxels_of):
    """Each TP group's predictions are TP (the largest) or merged fragments there, each FP
    prediction is FP, each FN reference is its own label in the missed labels everywhere."""
    label_of = {entry: k for k, entry in enumerate(entries, start=1)}
    seen = {"TP": 0, "FP": 0, "FN": 0}
    for c in classes:
        for row in c.rows:
            if not row.accepted:
                continue
            codes = np.concatenate([errors[voxels_of(c.name, "prediction", p)]
                                    for p in row.prediction_ids])
            assert set(np.unique(codes).tolist()) <= {TP, MERGED}, row
            assert TP in codes, row
            seen["TP"] += 1
        for pid in c.false_positive_ids:
            assert np.all(errors[voxels_of(c.name, "prediction", pid)] == FP), pid
            seen["FP"] += 1
        for rid in c.missed_reference_ids:
            assert np.all(missed[voxels_of(c.name, "reference", rid)] == label_of[c.name, rid])
            seen["FN"] += 1
    assert (seen["TP"], seen["FP"], seen["FN"]) == tuple(
        sum(getattr(c, k) for c in classes) for k in ("tp", "fp", "fn"))
    return seen


@pytest.mark.parametrize("dense", [False, True])
def test_every_row_is_in_the_error_layers_with_its_category(dense):
    ref, pred = merged_case((12, 22, 24) if dense else (24, 80, 80))
    if dense:  # more than an eighth of the voxels: the dense (box) path
        assert np.count_nonzero(ref | pred) > ref.size / 8
    # threshold 0.2: F (IoU 0.25 with D) joins S; B (IoU 128/768 with P) stays missed
    result = evaluate(ref, pred, instance_input=True, matching="many_to_one", threshold=0.2,
                      keep_maps=True, metrics=())
    c = result["all"]
    assert (c.tp, c.fp, c.fn) == (2, 1, 2)
    assert sorted(c.missed_reference_ids) == [9, 12] and c.false_positive_ids == [5]
    # the defect: the error map alone paints missed B as P's TP
    assert np.all(c.error_map[ref == 9] == TP)
    errors, missed, entries = class_layers([c])
    np.testing.assert_array_equal(errors, c.error_map)

    def voxels_of(_, side, ident):
        return (ref if side == "reference" else pred) == ident

    assert check_rows([c], errors, missed, entries, voxels_of) == {"TP": 2, "FP": 1, "FN": 2}
    assert np.all(missed[ref == 9] != 0) and np.all(missed[(ref != 9) & (ref != 12)] == 0)
    assert np.all(c.missed_map[ref == 9] == 9) and np.all(c.missed_map[ref == 12] == 12)
    assert np.all(errors[ref == 12] == FN)


def test_semantic_classes_share_one_layer_without_losing_a_row():
    """Each label value its own class: one error map and one missed layer for all classes,
    whose component numbers repeat from class to class."""
    inst_ref, inst_pred = merged_case((24, 80, 80))
    # values by object: A, B and C value 1, D value 2; P, Q value 1; S and F value 2
    ref = np.select([np.isin(inst_ref, [4, 9, 12]), inst_ref == 2], [1, 2], 0).astype(np.uint8)
    pred = np.select([np.isin(inst_pred, [3, 5]), np.isin(inst_pred, [8, 6])], [1, 2],
                     0).astype(np.uint8)
    pred[inst_pred == 6] = 0  # F removed: D is matched by S alone (IoU 0.75)
    ref[20:23, 60:63, 60:63] = 2  # a missed value-2 reference
    result = evaluate(ref, pred, keep_maps=True, metrics=())
    assert result.params["label_mode"] == "per_label" and list(result.classes) == ["1", "2"]
    classes = list(result.classes.values())
    structure = ndi.generate_binary_structure(3, 3)
    components = {(name, side): ndi.label((arr == int(name)), structure)[0]
                  for name in result.classes for side, arr in (("reference", ref),
                                                               ("prediction", pred))}

    def voxels_of(name, side, ident):
        return components[name, side] == ident

    errors, missed, entries = class_layers(classes)
    seen = check_rows(classes, errors, missed, entries, voxels_of)
    assert seen == {"TP": 2, "FP": 1, "FN": 3}
    assert len(entries) == len(set(entries)) == 3
    # component 1 of each class is a different reference: both are in the layer, apart
    assert ("2", 2) in entries and ("1", 2) in entries
