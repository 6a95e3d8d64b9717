"""Instance input read straight from the ids (``scan_labels``) against the compact-map path it
replaced and against Panoptica 2.1.7, for uint16 and int32 maps with sparse ids."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from napari_xaimed.evaluation import autc, evaluate, footprints, panoptic
from napari_xaimed.evaluation.foreground import foreground
from napari_xaimed.evaluation.instances import compact_labels, compact_values

SPACING = (1.5, 1.0, 0.8)
METRICS = ("hd", "hd95", "hd95_directed", "assd", "nsd")


def ball(grid, centre, radius):
    return sum((grid[k] - centre[k]) ** 2 for k in range(3)) <= radius * radius


@functools.cache
def instance_pair(seed: int, size: int = 48, n: int = 14, max_id: int = 3000
                  ) -> tuple[np.ndarray, np.ndarray]:
    """uint16 instance maps with ids scattered over 1..max_id: non-touching reference balls;
    the prediction misses some, splits some into two touching halves, merges one pair of
    neighbours with a bridge, jitters the rest and adds false positives."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3, dtype=np.float32)
    centres, radii = [], []
    while len(centres) < n:
        r = float(rng.uniform(2.5, 5.5))
        c = rng.uniform(r + 1, size - r - 2, 3)
        if all(np.linalg.norm(c - c2) > r + r2 + 2 for c2, r2 in zip(centres, radii, strict=True)):
            centres.append(c)
            radii.append(r)
    ids = iter(rng.choice(np.arange(1, max_id + 1), 3 * n, replace=False).tolist())
    reference = np.zeros((size,) * 3, np.uint16)
    prediction = np.zeros((size,) * 3, np.uint16)
    for i in range(n):
        reference[ball(grid, centres[i], radii[i])] = next(ids)
    order = rng.permutation(n).tolist()
    split, (a, b), rest = order[2:4], order[4:6], order[6:]  # order[:2] missed
    for i in split:
        mask = ball(grid, centres[i] + rng.uniform(-1, 1, 3), radii[i])
        axis = int(rng.integers(3))
        below = grid[axis] < centres[i][axis]
        prediction[mask & below] = next(ids)
        prediction[mask & ~below] = next(ids)
    bridge = ball(grid, (centres[a] + centres[b]) / 2, 1.5)
    prediction[ball(grid, centres[a], radii[a]) | ball(grid, centres[b], radii[b]) | bridge] = (
        next(ids))
    for i in rest:
        prediction[ball(grid, centres[i] + rng.uniform(-1, 1, 3),
                        radii[i] + rng.uniform(-0.5, 0.5))] = next(ids)
    for _ in range(3):
        r = float(rng.uniform(1.5, 3))
        prediction[ball(grid, rng.uniform(r, size - r, 3), r) & (prediction == 0)] = next(ids)
    return reference, prediction


def maps(seed: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    ref, pred = instance_pair(seed)
    return ref.astype(dtype), pred.astype(dtype)


def previous_path(monkeypatch):
    """Make evaluate/autc build compact maps first, as before scan_labels."""
    monkeypatch.setattr(panoptic, "scan_labels", lambda *args, **kwargs: None)


def assert_same_class(a, b):
    assert (a.tp, a.fp, a.fn, a.n_reference, a.n_prediction) == (
        b.tp, b.fp, b.fn, b.n_reference, b.n_prediction)
    for m in ("pq", "sq", "rq"):
        x, y = getattr(a, m), getattr(b, m)
        assert (math.isnan(x) and math.isnan(y)) or x == y, m
    assert len(a.rows) == len(b.rows)
    for r, s in zip(a.rows, b.rows, strict=True):
        for key, value in vars(r).items():
            other = getattr(s, key)
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(other), key
            else:
                assert value == other, key
    assert a.missed_reference_ids == b.missed_reference_ids
    assert a.false_positive_ids == b.false_positive_ids
    assert a.missed_voxels == b.missed_voxels
    assert a.false_positive_voxels == b.false_positive_voxels
    assert a.missed_centres == pytest.approx(b.missed_centres)
    assert a.false_positive_centres == pytest.approx(b.false_positive_centres)


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.uint64])
def test_compact_values_number_like_compact_labels(dtype):
    rng = np.random.default_rng(3)
    top = 200 if dtype == np.uint8 else 40_000
    labels = np.where(rng.random((9, 10, 11)) < 0.3, rng.integers(1, top, (9, 10, 11)), 0)
    labels = labels.astype(dtype)
    compact, ids = compact_labels(labels.astype(np.int64))
    numbers, ids_sparse = compact_values(labels)
    np.testing.assert_array_equal(ids_sparse, ids)
    np.testing.assert_array_equal(numbers, compact)
    assert numbers.dtype == np.uint16  # fewer than 65536 instances


def test_compact_values_huge_ids_and_selection():
    values = np.array([0, 2**40, 7, 2**40, 9, 0, 7, 2**33], np.int64)
    numbers, ids = compact_values(values)
    assert ids.tolist() == [7, 9, 2**33, 2**40]
    assert numbers.tolist() == [0, 4, 1, 4, 2, 0, 1, 3]
    numbers, ids = compact_values(values, selected=np.array([7, 2**40]))
    assert ids.tolist() == [7, 2**40]
    assert numbers.tolist() == [0, 2, 1, 2, 0, 0, 1, 0]
    small, ids = compact_values(np.array([0, 5, 3, 5], np.uint16), selected=np.array([5]))
    assert ids.tolist() == [5] and small.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("shape", [(5, 6, 7), (4, 4, 4), (3, 5, 1), (1, 1, 3)])
@pytest.mark.parametrize("dtypes", [(np.uint8, np.uint8), (np.uint16, np.uint16),
                                    (np.int32, np.int32), (np.int64, np.int64),
                                    (np.uint16, np.int32), (bool, bool)])
def test_foreground_is_every_nonzero_voxel(shape, dtypes):
    """Word and slab paths, volumes that do not fill the last word, mixed item sizes."""
    rng = np.random.default_rng(sum(shape))
    ref = (rng.random(shape) < 0.2) * rng.integers(1, 100, shape)
    pred = (rng.random(shape) < 0.2) * rng.integers(1, 100, shape)
    ref, pred = ref.astype(dtypes[0]), pred.astype(dtypes[1])
    index, ref_values, pred_values = foreground(ref, pred, ref.size)
    want = np.flatnonzero((ref != 0) | (pred != 0))
    np.testing.assert_array_equal(index, want)
    np.testing.assert_array_equal(ref_values, ref.reshape(-1)[want])
    np.testing.assert_array_equal(pred_values, pred.reshape(-1)[want])
    assert ref_values.dtype == ref.dtype and pred_values.dtype == pred.dtype


def test_foreground_of_views_and_past_the_limit():
    rng = np.random.default_rng(1)
    ref = ((rng.random((6, 7, 8)) < 0.1) * 5).astype(np.uint16)
    pred = ((rng.random((6, 7, 8)) < 0.1) * 9).astype(np.uint16)
    index, ref_values, _ = foreground(ref.transpose(2, 0, 1), pred.transpose(2, 0, 1), ref.size)
    np.testing.assert_array_equal(index, np.flatnonzero(
        (ref.transpose(2, 0, 1) != 0) | (pred.transpose(2, 0, 1) != 0)))
    n = np.count_nonzero((ref != 0) | (pred != 0))
    assert foreground(ref, pred, n) is not None
    assert foreground(ref, pred, n - 1) is None
    assert foreground(ref, pred.astype(np.int32), n - 1) is None


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("side", ["reference", "prediction"])
def test_negative_ids_are_refused_on_either_path(monkeypatch, dense, side):
    """The sign check moved into the scan of the nonzero voxels; the dense fallback still
    checks the whole map. Same message either way, naming the map."""
    from napari_xaimed import XaimedError

    ref, pred = maps(0, np.int32)
    ref, pred = ref.copy(), pred.copy()
    (ref if side == "reference" else pred)[3, 4, 5] = -7
    if dense:
        monkeypatch.setattr(footprints, "SPARSE_FRACTION", 0.0)
    for run in (lambda: evaluate(ref, pred, instance_input=True, metrics=()),
                lambda: autc(ref, pred, instance_input=True)):
        with pytest.raises(XaimedError, match=f"{side} has negative labels \\(-7\\)"):
            run()


def test_scan_labels_falls_back_when_dense():
    ref = np.ones((8, 8, 8), np.uint16)
    assert footprints.scan_labels(ref, ref) is None


# --------------------------------------------------------------------------------------------
# The whole evaluation: fast path against the previous one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("matching", ["one_to_one", "many_to_one", "one_to_many"])
def test_same_as_the_compact_map_path(monkeypatch, dtype, matching):
    ref, pred = maps(0, dtype)
    kwargs = dict(spacing=SPACING, matching=matching, threshold=0.3, instance_input=True,
                  metrics=METRICS + ("cldice",), keep_maps=True)
    fast = evaluate(ref, pred, **kwargs)["all"]
    assert fast.tp >= 8 and fast.fp >= 3 and fast.fn >= 2
    assert any(len(r.prediction_ids) > 1 or len(r.reference_ids) > 1 for r in fast.rows) == (
        matching != "one_to_one")
    previous_path(monkeypatch)
    before = evaluate(ref, pred, **kwargs)["all"]
    assert_same_class(fast, before)
    np.testing.assert_array_equal(fast.error_map, before.error_map)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64])
def test_same_as_the_compact_map_path_per_class(monkeypatch, dtype):
    """Class selections: the other classes' ids are background for this one."""
    ref, pred = maps(1, dtype)
    ref_ids = np.unique(ref[ref > 0])
    pred_ids = np.unique(pred[pred > 0])
    if dtype == np.int64:  # ids beyond 32 bits
        ref, pred = ref * np.int64(2**36), pred * np.int64(2**36)
        ref_ids, pred_ids = ref_ids * 2**36, pred_ids * 2**36
    classes = {"a": ref_ids[::2].tolist() + pred_ids[::2].tolist(),
               "b": ref_ids[1::2].tolist() + pred_ids[1::2].tolist()}
    kwargs = dict(spacing=SPACING, threshold=0.2, instance_input=True, classes=classes,
                  metrics=("hd95", "assd"), keep_maps=True)
    fast = evaluate(ref, pred, **kwargs)
    curves = autc(ref, pred, instance_input=True, classes=classes)
    previous_path(monkeypatch)
    before = evaluate(ref, pred, **kwargs)
    curves_before = autc(ref, pred, instance_input=True, classes=classes)
    for name in classes:
        assert_same_class(fast[name], before[name])
        np.testing.assert_array_equal(fast[name].error_map, before[name].error_map)
        assert curves.counts[name] == curves_before.counts[name]
        assert curves.area[name] == curves_before.area[name]


def test_dense_instance_maps_still_take_the_compact_path(monkeypatch):
    """Past the sparse fraction: compact maps, boxes and the two-lookup error map; the same
    results, error map included."""
    ref, pred = maps(2, np.int32)
    kwargs = dict(instance_input=True, matching="many_to_one", threshold=0.3,
                  metrics=("hd95",), keep_maps=True)
    sparse = evaluate(ref, pred, **kwargs)["all"]
    monkeypatch.setattr(footprints, "SPARSE_FRACTION", 0.0)
    dense = evaluate(ref, pred, **kwargs)["all"]
    assert (sparse.tp, sparse.fp, sparse.fn) == (dense.tp, dense.fp, dense.fn)
    assert [r.hd95 for r in sparse.rows] == pytest.approx([r.hd95 for r in dense.rows])
    assert set(np.unique(dense.error_map).tolist()) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(sparse.error_map, dense.error_map)


def test_instance_input_never_relabels_the_whole_volume(monkeypatch):
    """The fast path reads the ids where they are nonzero: compact_labels is not called."""
    from napari_xaimed.evaluation import instances

    def refuse(labels):
        raise AssertionError("compact_labels called")

    monkeypatch.setattr(instances, "compact_labels", refuse)
    ref, pred = maps(0, np.uint16)
    result = evaluate(ref, pred, instance_input=True, metrics=("hd95", "assd"),
                      keep_maps=True)["all"]
    assert result.tp > 0


# --------------------------------------------------------------------------------------------
# Against Panoptica on instance maps with sparse ids
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_as_panoptica_on_sparse_ids(dtype, seed):
    from panoptica import (
        InputType,
        Metric,
        MetricMode,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )

    ref, pred = maps(seed, dtype)
    ours = evaluate(ref, pred, spacing=SPACING, instance_input=True, threshold=0.5,
                    metrics=("hd", "hd95", "assd"))["all"]
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.UNMATCHED_INSTANCE,
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        instance_metrics=[Metric.DSC, Metric.IOU, Metric.ASSD, Metric.HD, Metric.HD95],
        decision_metric=Metric.IOU,
        decision_threshold=0.5,
    )
    theirs = evaluator.evaluate(pred, ref, voxelspacing=SPACING)["ungrouped"]
    assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn)
    assert ours.tp >= 8
    for m in ("pq", "sq", "rq"):
        assert getattr(ours, m) == pytest.approx(getattr(theirs, m), abs=1e-9), m
    accepted = sorted((r for r in ours.rows if r.accepted), key=lambda r: r.reference_ids)
    for name, metric in (("dice", Metric.DSC), ("iou", Metric.IOU), ("assd", Metric.ASSD),
                         ("hd", Metric.HD), ("hd95", Metric.HD95)):
        values = theirs.get_list_metric(metric, MetricMode.ALL)
        assert [getattr(r, name) for r in accepted] == pytest.approx(values, abs=1e-9), name


def test_views_of_maps_give_the_results_of_their_copies():
    """Transposed (non-contiguous) instance maps: the same as contiguous copies of them."""
    ref, pred = maps(1, np.int32)
    ref_view, pred_view = ref.transpose(2, 1, 0), pred.transpose(2, 1, 0)
    assert not ref_view.flags.c_contiguous
    kwargs = dict(instance_input=True, metrics=("hd95", "assd"), keep_maps=True)
    view = evaluate(ref_view, pred_view, **kwargs)["all"]
    copy = evaluate(ref_view.copy(), pred_view.copy(), **kwargs)["all"]
    assert_same_class(view, copy)
    np.testing.assert_array_equal(view.error_map, copy.error_map)
