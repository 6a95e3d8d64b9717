"""Panoptic evaluation on hand-computed cases: counts, PQ/SQ/RQ, strategies, edge cases."""

import math

import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed.evaluation import autc, evaluate
from napari_xaimed.evaluation.matching import count, group_edges, match_edges
from napari_xaimed.evaluation.overlap import OverlapTable


def cube(shape, start, size, value, out=None):
    out = np.zeros(shape, np.int32) if out is None else out
    z, y, x = start
    dz, dy, dx = size
    out[z:z + dz, y:y + dy, x:x + dx] = value
    return out


@pytest.fixture
def shifted_case():
    """Reference cubes A (64 voxels) and B (27); prediction: A shifted by one voxel in x
    (overlap 48, IoU 48/80 = 0.6, Dice 0.75), B missed, one false positive."""
    shape = (12, 12, 16)
    ref = cube(shape, (1, 1, 1), (4, 4, 4), 7)
    cube(shape, (7, 7, 7), (3, 3, 3), 9, ref)
    pred = cube(shape, (1, 1, 2), (4, 4, 4), 3)
    cube(shape, (7, 1, 11), (2, 2, 2), 5, pred)
    return ref, pred


@pytest.mark.parametrize("instance_input", [True, False])
def test_counts_and_quality_by_hand(shifted_case, instance_input):
    ref, pred = shifted_case
    if not instance_input:
        ref, pred = (ref > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    c = evaluate(ref, pred, instance_input=instance_input)["all"]
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    assert c.rq == pytest.approx(0.5)
    assert c.sq == pytest.approx(0.6)
    assert c.pq == pytest.approx(0.3)
    (row,) = [r for r in c.rows if r.accepted]
    assert row.iou == pytest.approx(0.6) and row.dice == pytest.approx(0.75)
    assert row.rvd == 0.0
    if instance_input:
        assert row.reference_ids == (7,) and row.prediction_ids == (3,)
        assert c.missed_reference_ids == [9] and c.false_positive_ids == [5]


def test_match_metric_dice(shifted_case):
    ref, pred = shifted_case
    c = evaluate(ref, pred, instance_input=True, match_metric="dice", threshold=0.7)["all"]
    assert c.tp == 1 and c.sq == pytest.approx(0.75)
    assert evaluate(ref, pred, instance_input=True, threshold=0.7)["all"].tp == 0


def test_identical_inputs_are_perfect(shifted_case):
    ref, _ = shifted_case
    c = evaluate(ref, ref, instance_input=True, spacing=(2.0, 1.0, 0.5))["all"]
    assert (c.tp, c.fp, c.fn, c.pq) == (2, 0, 0, 1.0)
    for row in c.rows:
        assert row.hd == 0 and row.hd95 == 0 and row.assd == 0 and row.nsd == 1.0
    assert c.rows[0].reference_mm3 == 64 * 1.0


def test_threshold_is_inclusive_unless_strict():
    shape = (8, 8, 8)
    ref = cube(shape, (1, 1, 1), (4, 4, 4), 1)
    pred = cube(shape, (1, 1, 1), (4, 4, 2), 1)  # IoU exactly 0.5
    assert evaluate(ref, pred, instance_input=True, threshold=0.5)["all"].tp == 1
    assert evaluate(ref, pred, instance_input=True, threshold=0.5, strict=True)["all"].tp == 0


def split_case():
    """One reference (4x4x8) predicted as two halves: each half has IoU 0.5."""
    shape = (8, 8, 12)
    ref = cube(shape, (1, 1, 1), (4, 4, 8), 1)
    pred = cube(shape, (1, 1, 1), (4, 4, 4), 4)
    cube(shape, (1, 1, 5), (4, 4, 4), 8, pred)
    return ref, pred


def test_many_to_one_merges_fragments_of_a_split():
    ref, pred = split_case()
    one = evaluate(ref, pred, instance_input=True, threshold=0.3)["all"]
    assert (one.tp, one.fp, one.fn) == (1, 1, 0) and one.sq == pytest.approx(0.5)
    many = evaluate(ref, pred, instance_input=True, threshold=0.3, matching="many_to_one")["all"]
    # fragments merged into a TP are not FP, and the merged segment is the whole reference
    assert (many.tp, many.fp, many.fn) == (1, 0, 0)
    assert many.sq == pytest.approx(1.0) and many.pq == pytest.approx(1.0)
    (row,) = many.rows
    assert row.prediction_ids == (4, 8) and row.hd == 0


def test_one_to_many_credits_a_merge():
    pred, ref = split_case()  # the mirror image: one prediction covers two references
    one = evaluate(ref, pred, instance_input=True, threshold=0.3)["all"]
    assert (one.tp, one.fp, one.fn) == (1, 0, 1)
    merged = evaluate(ref, pred, instance_input=True, threshold=0.3, matching="one_to_many")["all"]
    assert (merged.tp, merged.fp, merged.fn) == (2, 0, 0)
    assert merged.sq == pytest.approx(1.0)
    assert merged.rows[0].reference_ids == (4, 8)


def table(ref_sizes, pred_sizes, pairs):
    r, p, n = zip(*pairs, strict=True)
    return OverlapTable(np.array([0, *ref_sizes]), np.array([0, *pred_sizes]),
                        np.array(r), np.array(p), np.array(n))


def test_optimal_assignment_beats_greedy_on_a_crafted_table():
    # IoU(A,P) = 60/100 = 0.6, IoU(A,Q) = 55/100 = 0.55, IoU(B,P) = 55/100 = 0.55
    t = table([80, 75], [80, 75], [(1, 1, 60), (1, 2, 55), (2, 1, 55)])
    scores = t.scores("iou")
    assert scores == pytest.approx([0.6, 0.55, 0.55])
    greedy = match_edges(t, scores, 0.5, "one_to_one", "greedy")
    optimal = match_edges(t, scores, 0.5, "one_to_one", "optimal")
    assert greedy == [(1, 1)]
    assert optimal == [(1, 2), (2, 1)]
    counts = count(group_edges(optimal, t, {(1, 1): 60, (1, 2): 55, (2, 1): 55}, "iou",
                               "one_to_one"), 2, 2, 0.5, False, "one_to_one")
    assert (counts.tp, counts.fp, counts.fn) == (2, 0, 0)


def test_empty_input_conventions():
    empty = np.zeros((6, 6, 6), np.uint8)
    some = cube((6, 6, 6), (1, 1, 1), (2, 2, 2), 1)
    both = evaluate(empty, empty)["all"]
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert math.isnan(both.pq) and math.isnan(both.sq) and math.isnan(both.rq)
    missed = evaluate(some, empty)["all"]
    assert (missed.tp, missed.fp, missed.fn, missed.pq, missed.sq, missed.rq) == (0, 0, 1, 0, 0, 0)
    assert math.isnan(missed.mean("hd95"))  # no TP: the distance means are undefined
    spurious = evaluate(empty, some)["all"]
    assert (spurious.tp, spurious.fp, spurious.fn, spurious.pq) == (0, 1, 0, 0)


def test_more_than_65535_instances_and_huge_ids():
    n = 70_000
    ref = np.zeros(50 * 50 * 50, np.int64)
    ref[:n] = np.arange(1, n + 1)
    ref = ref.reshape(50, 50, 50)
    pred = np.where(ref > 0, ref + 2**40, 0)
    c = evaluate(ref, pred, instance_input=True, metrics=())["all"]
    assert (c.tp, c.fp, c.fn, c.pq) == (n, 0, 0, 1.0)


def test_classes_group_label_values():
    shape = (10, 10, 10)
    ref = cube(shape, (0, 0, 0), (3, 3, 3), 1)
    cube(shape, (5, 5, 5), (3, 3, 3), 2, ref)
    cube(shape, (0, 6, 0), (3, 3, 3), 3, ref)
    pred = ref.copy()
    pred[pred == 3] = 0
    result = evaluate(ref, pred, classes={"lesion": [1, 2], "organ": [3]})
    assert (result["lesion"].tp, result["lesion"].fn) == (2, 0)
    assert (result["organ"].tp, result["organ"].fn) == (0, 1)
    frame = result.to_dataframe()
    assert list(frame["class"]) == ["lesion", "organ"]
    assert result.to_dict()["classes"]["organ"]["fn"] == 1


def test_autc_by_hand(shifted_case):
    ref, pred = shifted_case
    result = autc(ref, pred, instance_input=True)
    # PQ is 0.3 while the threshold is <= 0.6 (the only pair's IoU), then 0
    expected = [0.3] * 7 + [0.0] * 4
    np.testing.assert_allclose(result.curves["all"]["pq"], expected)
    assert result.area["all"]["pq"] == pytest.approx(0.3 * 0.6 + 0.5 * 0.3 * 0.1)
    assert autc(ref, ref, instance_input=True).area["all"]["pq"] == pytest.approx(1.0)
    # the per-threshold counts agree with a full evaluation at each threshold
    for t, counts in zip(result.thresholds, result.counts["all"], strict=True):
        c = evaluate(ref, pred, instance_input=True, threshold=t, metrics=())["all"]
        assert counts == (c.tp, c.fp, c.fn)


def test_bad_inputs_name_the_fix():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(XaimedError, match="differ in shape"):
        evaluate(a, np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(XaimedError, match="3D"):
        evaluate(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(XaimedError, match="non-integer"):
        evaluate(a, np.full((4, 4, 4), 0.5))
    with pytest.raises(XaimedError, match="negative"):
        evaluate(a, np.full((4, 4, 4), -1))
    with pytest.raises(XaimedError, match="many_to_many"):
        evaluate(a, a, matching="many_to_many")
    with pytest.raises(XaimedError, match="optimal"):
        evaluate(a, a, matching="many_to_one", assignment="optimal")
    with pytest.raises(XaimedError, match="threshold"):
        evaluate(a, a, threshold=1.5)


@pytest.mark.parametrize("connectivity,rank", [(6, 1), (18, 2), (26, 3)])
def test_components_equal_scipy_labels(connectivity, rank):
    from scipy import ndimage as ndi

    from napari_xaimed.evaluation.instances import connected_components

    mask = np.random.default_rng(connectivity).random((20, 21, 22)) > 0.7
    ours, n = connected_components(mask, connectivity)
    theirs, n_theirs = ndi.label(mask, structure=ndi.generate_binary_structure(3, rank))
    np.testing.assert_array_equal(ours, theirs)
    assert n == n_theirs  # same components, same raster numbering


@pytest.mark.parametrize("matching", ["one_to_one", "many_to_one", "one_to_many"])
def test_sparse_and_dense_paths_agree(monkeypatch, matching):
    """The foreground-gather path (sparse volumes) and the slab/box path (dense volumes) give
    the same table, rows and distances, touching instances merged into one group included."""
    from napari_xaimed.evaluation import footprints
    from napari_xaimed.samples import panoptic_pair

    pair = panoptic_pair(seed=4)
    assert np.mean((pair.reference > 0) | (pair.prediction > 0)) < footprints.SPARSE_FRACTION
    kwargs = dict(spacing=pair.spacing, matching=matching, threshold=0.3, instance_input=True,
                  metrics=("hd95", "assd", "nsd"))
    sparse = evaluate(pair.reference, pair.prediction, **kwargs)["all"]
    monkeypatch.setattr(footprints, "SPARSE_FRACTION", 0.0)
    dense = evaluate(pair.reference, pair.prediction, **kwargs)["all"]
    assert (sparse.tp, sparse.fp, sparse.fn) == (dense.tp, dense.fp, dense.fn)
    assert len(sparse.rows) == len(dense.rows) > 0
    for a, b in zip(sparse.rows, dense.rows, strict=True):
        assert (a.reference_ids, a.prediction_ids) == (b.reference_ids, b.prediction_ids)
        for key in ("dice", "iou", "hd95", "assd", "nsd"):
            assert getattr(a, key) == pytest.approx(getattr(b, key), nan_ok=True), key
        assert a.center_zyx == pytest.approx(b.center_zyx)


@pytest.mark.parametrize("sparse", [True, False])
def test_unmatched_instances_have_centres_and_sizes(monkeypatch, sparse):
    """Missed references and false positives carry their voxel counts and centres of mass
    (voxel coordinates), equal to scipy's, on both the sparse and the dense path."""
    from scipy import ndimage as ndi

    from napari_xaimed.evaluation import footprints
    from napari_xaimed.samples import panoptic_pair

    if not sparse:
        monkeypatch.setattr(footprints, "SPARSE_FRACTION", 0.0)
    pair = panoptic_pair(seed=0)
    c = evaluate(pair.reference, pair.prediction, instance_input=True, metrics=())["all"]
    assert set(pair.events["miss"]) <= set(c.missed_reference_ids)
    assert set(pair.events["false_positive"]) <= set(c.false_positive_ids)
    assert set(c.missed_centres) == set(c.missed_voxels) == set(c.missed_reference_ids)
    assert set(c.false_positive_centres) == set(c.false_positive_voxels) == set(
        c.false_positive_ids)
    for ids, centres, voxels, labels in (
            (c.missed_reference_ids, c.missed_centres, c.missed_voxels, pair.reference),
            (c.false_positive_ids, c.false_positive_centres, c.false_positive_voxels,
             pair.prediction)):
        for i in ids:
            mask = labels == i
            assert voxels[i] == int(mask.sum())
            assert centres[i] == pytest.approx(ndi.center_of_mass(mask))
    summary = evaluate(pair.reference, pair.prediction, instance_input=True,
                       metrics=()).to_dict()["classes"]["all"]
    assert summary["missed_centres"] == c.missed_centres


def reference_cldice(reference, prediction):
    """clDice as Shit et al. (2021) define it, on scikit-image skeletons."""
    from skimage.morphology import skeletonize

    s_ref, s_pred = skeletonize(reference), skeletonize(prediction)
    precision = (s_pred & reference).sum() / s_pred.sum()
    sensitivity = (s_ref & prediction).sum() / s_ref.sum()
    return 2 * precision * sensitivity / (precision + sensitivity)


def test_cldice_is_opt_in(monkeypatch):
    """The defaults (in memory and lazy) compute HD, HD95, ASSD and NSD but never skeletonise:
    clDice is NaN unless asked for, and asking gives the published formula's value."""
    from napari_xaimed.evaluation import DEFAULT_METRICS, evaluate_lazy, per_class

    shape = (9, 9, 40)
    tube = cube(shape, (3, 3, 2), (3, 3, 36), 4)
    broken = tube.copy()
    broken[:, :, 18:22] = 0  # a gap in the prediction: one instance id, two pieces
    calls = []
    real = per_class.cldice
    monkeypatch.setattr(per_class, "cldice", lambda a, b: calls.append(1) or real(a, b))
    for result in (evaluate(tube, broken, instance_input=True),
                   evaluate_lazy(tube, broken, instance_input=True)):
        (row,) = result["all"].rows
        assert row.accepted and math.isnan(row.cldice) and not calls
        assert result.params["metrics"] == list(DEFAULT_METRICS)
        assert "cldice" not in result.params["metrics"]
        assert row.hd == pytest.approx(2.0) and row.nsd < 1.0  # the gap's faces, 2 voxels in
        summary = result["all"].summary()  # no column of NaNs for what was not asked for
        assert "mean_cldice" not in summary and summary["mean_hd"] == pytest.approx(2.0)
    asked = evaluate(tube, broken, instance_input=True, metrics=(*DEFAULT_METRICS, "cldice"))
    (row,) = asked["all"].rows
    assert calls and row.cldice == pytest.approx(reference_cldice(tube > 0, broken > 0))
    assert 0.8 < row.cldice < 1.0
    assert asked["all"].summary()["mean_cldice"] == row.cldice
