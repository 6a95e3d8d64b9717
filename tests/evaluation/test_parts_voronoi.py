"""Part-aware scores and Voronoi regions on hand-made cases."""

import math

import numpy as np
import pytest

from napari_xaimed import XaimedError, samples
from napari_xaimed.evaluation import evaluate
from napari_xaimed.evaluation.errors import FN, FP, MERGED, TP


def things_with_cores():
    """Thing A (value 1) with a 2x2x2 core (value 2), thing B with a 4x4x4 core. The prediction
    has both things, A without its core, B with its core, plus a false-positive thing with a core."""
    ref = np.zeros((12, 12, 30), np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    ref[5:7, 5:7, 5:7] = 2
    ref[2:10, 2:10, 14:22] = 1
    ref[4:8, 4:8, 16:20] = 2
    pred = ref.copy()
    pred[pred == 2] = 0
    pred[2:10, 2:10, 2:10] = 1
    pred[4:8, 4:8, 16:20] = 2
    pred[4:8, 4:8, 25:29] = 1
    pred[5:7, 5:7, 26:28] = 2
    return ref, pred


PARTS = {"tumor": {"thing": [1, 2], "parts": {"core": [2]}}}


def test_parts_are_scored_inside_their_own_thing():
    ref, pred = things_with_cores()
    c = evaluate(ref, pred, parts=PARTS)["tumor"]
    assert (c.tp, c.fp, c.fn) == (2, 1, 0)
    scores = sorted(row.parts["core"] for row in c.rows if row.accepted)
    assert scores == [0.0, 1.0]  # A lost its core, B kept it
    # per-thing mean, not a pool over the image (which would give 64 / (8 + 64) = 0.89)
    assert c.part_sq["core"] == pytest.approx(0.5)
    assert c.part_pq["core"] == pytest.approx(0.5 * c.rq)
    assert c.rq == pytest.approx(2 / 2.5)
    # combined score per TP: mean of thing IoU (1.0) and core score
    assert c.part_aware_pq == pytest.approx(np.mean([0.5, 1.0]) * c.rq)


def test_parts_do_not_depend_on_raw_label_values():
    ref, pred = things_with_cores()
    remap = np.array([0, 5, 9], np.uint8)
    other = {"tumor": {"thing": [5, 9], "parts": {"core": [9]}}}
    a = evaluate(ref, pred, parts=PARTS)["tumor"].summary()
    b = evaluate(remap[ref], remap[pred], parts=other)["tumor"].summary()
    assert a.pop("class") == b.pop("class")
    assert b == pytest.approx(a, nan_ok=True)


def test_parts_spec_is_checked():
    ref, pred = things_with_cores()
    with pytest.raises(XaimedError, match="not among the thing"):
        evaluate(ref, pred, parts={"t": {"thing": [1], "parts": {"core": [2]}}})
    with pytest.raises(XaimedError, match="semantic"):
        evaluate(ref, pred, parts=PARTS, instance_input=True)


def test_voronoi_regions_and_rows():
    ref = np.zeros((6, 6, 40), np.int32)
    ref[1:5, 1:5, 2:6] = 3  # A: x 2..5
    ref[1:5, 1:5, 30:34] = 8  # B: x 30..33
    pred = np.zeros_like(ref)
    pred[1:5, 1:5, 4:12] = 1  # overlaps A by 2 columns, spills 6 columns towards B
    c = evaluate(ref, pred, instance_input=True, voronoi=True, keep_maps=True,
                 spacing=(1.0, 1.0, 2.0))["all"]
    rows = {row["reference_id"]: row for row in c.regions}
    # region A takes every voxel nearer to A: the whole prediction lies in it
    assert rows[3]["prediction_voxels"] == 4 * 4 * 8
    assert rows[3]["dice"] == pytest.approx(2 * 32 / (64 + 128))
    assert rows[8]["prediction_voxels"] == 0 and rows[8]["dice"] == 0.0
    assert math.isnan(rows[8]["hd95"])
    # the boundary lies half way between the two cubes (x = 5 and x = 30 -> 17.5)
    assert (c.region_map[:, :, :18] == 3).all() and (c.region_map[:, :, 18:] == 8).all()
    assert c.summary()["region_mean_dice"] == pytest.approx(rows[3]["dice"] / 2)


def test_error_map_codes():
    s = samples.panoptic_pair(seed=0)
    c = evaluate(s.reference, s.prediction, instance_input=True, matching="many_to_one",
                 threshold=0.3, keep_maps=True, metrics=())["all"]
    err = c.error_map
    assert err.shape == s.reference.shape
    for fp in s.events["false_positive"]:
        assert (err[s.prediction == fp] == FP).all()
    for miss in s.events["miss"]:
        assert (err[s.reference == miss] == FN).all()
    pieces = s.split_pieces[1]
    codes = {int(np.unique(err[s.prediction == p])[0]) for p in pieces}
    assert codes == {TP, MERGED}
