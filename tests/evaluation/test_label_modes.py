"""Semantic maps with several label values: never merged silently (DESIGN.md, issue 27 item 8).

Against Panoptica 2.1.7 on seeded multi-label pairs (touching values, missed and split
objects, a value predicted as another, a value only in the prediction):

- ``label_mode="panoptica"``: Panoptica's semantic evaluation without class groups (its
  connected components keep label values apart, its matching ignores them): the same instance
  maps, TP/FP/FN and PQ/SQ/RQ;
- ``label_mode="per_label"`` (the default): Panoptica with one label group per value, class by
  class, and the mean over classes;
- ``evaluate_lazy`` and ``autc`` follow the same modes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math

import numpy as np
import pytest
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    Metric,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.utils.constants import CCABackend
from panoptica.utils.label_group import LabelGroup
from panoptica.utils.segmentation_class import SegmentationClassGroups
from panoptica.utils.speed_toggles import PanopticaSpeedToggles

from napari_xaimed import XaimedError
from napari_xaimed.components.memory import _value_components_scipy
from napari_xaimed.evaluation import autc, evaluate, evaluate_lazy
from napari_xaimed.evaluation.instances import (
    class_instances,
    label_values,
    value_components,
)
from napari_xaimed.evaluation.label_modes import MEAN_CLASS

SPACING = (2.0, 1.0, 0.8)
TOL = 1e-6
SEEDS = (0, 1, 2)


def ball(grid, centre, radius):
    return sum((grid[k] - centre[k]) ** 2 for k in range(3)) <= radius * radius


@functools.cache
def multilabel_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a column of touching objects whose values alternate 1/2 (vertebrae and
    discs), plus scattered balls of values 3, 5 and 7. Prediction: shifted copies, with one
    value-1 object split in two, one value-3 ball missed, the value-5 balls predicted as 7,
    two value-7 balls merged by a bridge, and a value 9 found only in the prediction."""
    rng = np.random.default_rng(seed)
    shape = (40, 44, 44)
    grid = np.indices(shape, dtype=np.float32)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    # the column: slabs of values 1 and 2 stacked along z, touching
    z = 2
    column = []
    while z < 34:
        value = 1 if len(column) % 2 == 0 else 2
        depth = int(rng.integers(4, 6)) if value == 1 else 2
        column.append((value, z, z + depth))
        z += depth
    cy, cx = 10 + rng.integers(-1, 2), 10 + rng.integers(-1, 2)
    for value, z0, z1 in column:
        ref[z0:z1, cy - 5:cy + 5, cx - 5:cx + 5] = value
        dy = int(rng.integers(-1, 2))
        pred[z0:z1, cy - 5 + dy:cy + 5 + dy, cx - 5:cx + 4] = value
    # split one value-1 object of the prediction by a plane gap
    _, z0, z1 = column[2]
    pred[z0:z1, cy, :] = np.where(pred[z0:z1, cy, :] == 1, 0, pred[z0:z1, cy, :])
    # scattered balls
    centres = []
    for value in (3, 3, 5, 5, 7, 7, 7):
        for _ in range(500):
            c = rng.uniform([5, 23, 5], [35, 39, 39])
            if all(np.linalg.norm(c - c2) > 9 for c2 in centres):
                break
        centres.append(c)
        r = float(rng.uniform(2.5, 3.5))
        ref[ball(grid, c, r)] = value
        predicted = {5: 7}.get(value, value)
        pred[ball(grid, c + rng.uniform(-0.7, 0.7, 3), r * rng.uniform(0.9, 1.15))] = predicted
    pred[ball(grid, centres[0], 4.5)] = 0  # the first value-3 ball missed
    # two value-7 balls bridged in the prediction
    a, b = centres[4], centres[5]
    for t in np.linspace(0, 1, 40):
        p = np.round(a + t * (b - a)).astype(int)
        pred[p[0], p[1] - 1:p[1] + 1, p[2] - 1:p[2] + 1] = 7
    # a value only in the prediction
    pred[36:39, 2:6, 36:40] = 9
    return ref, pred


def quietly(call):
    with contextlib.redirect_stdout(io.StringIO()):
        return call()


def panoptica(ref, pred, *, threshold=0.5, many_to_one=False, groups=None, autc_step=None):
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=threshold,
                                                allow_many_to_one=many_to_one),
        segmentation_class_groups=groups,
        instance_metrics=[Metric.DSC, Metric.IOU],
        decision_metric=Metric.IOU, decision_threshold=threshold,
        # no crop, so the intermediate instance maps have the input's shape
        speed_toggles=PanopticaSpeedToggles(crop_at_start=False))
    if autc_step is not None:
        return quietly(lambda: evaluator.evaluate_autc(pred, ref, threshold_step_size=autc_step))
    return quietly(lambda: evaluator.evaluate(pred, ref, voxelspacing=SPACING,
                                              log_intermediate_steps=True))


def per_value_groups(ref, pred):
    values = sorted((set(np.unique(ref).tolist()) | set(np.unique(pred).tolist())) - {0})
    return values, SegmentationClassGroups({f"v{v}": LabelGroup(int(v)) for v in values})


def same(a, b):
    a, b = float(a), float(b)
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, abs_tol=TOL)


def test_the_pairs_hold_what_they_say():
    for seed in SEEDS:
        ref, pred = multilabel_pair(seed)
        assert set(np.unique(ref).tolist()) == {0, 1, 2, 3, 5, 7}
        assert set(np.unique(pred).tolist()) == {0, 1, 2, 3, 7, 9}
        # values 1 and 2 touch: merging the values makes the column one object
        merged, _ = class_instances(ref, None, instance_input=False)
        apart, _ = class_instances(ref, None, instance_input=False, values_apart=True)
        assert merged.max() < apart.max()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("threshold", "many_to_one"), [(0.5, False), (0.3, True)])
def test_panoptica_mode_is_panopticas_ungrouped_semantic_evaluation(seed, threshold,
                                                                    many_to_one):
    ref, pred = multilabel_pair(seed)
    ours = evaluate(ref, pred, spacing=SPACING, label_mode="panoptica", threshold=threshold,
                    matching="many_to_one" if many_to_one else "one_to_one", metrics=())
    theirs = panoptica(ref, pred, threshold=threshold, many_to_one=many_to_one)["ungrouped"]
    assert ours.params["label_mode"] == "panoptica" and list(ours.classes) == ["all"]
    c = ours["all"]
    # the same instances: components of each value kept apart, numbered alike
    unmatched = theirs.intermediate_steps_data["UNMATCHED_INSTANCE"]
    ref_map, _ = class_instances(ref, None, instance_input=False, values_apart=True)
    pred_map, _ = class_instances(pred, None, instance_input=False, values_apart=True)
    np.testing.assert_array_equal(ref_map, unmatched.reference_arr)
    np.testing.assert_array_equal(pred_map, unmatched.prediction_arr)
    assert (c.tp, c.fp, c.fn) == (theirs.tp, theirs.fp, theirs.fn)
    for metric in ("pq", "sq", "rq"):
        assert same(getattr(c, metric), getattr(theirs, metric)), metric


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("threshold", "many_to_one"), [(0.5, False), (0.3, True)])
def test_per_label_mode_is_panoptica_with_one_group_per_value(seed, threshold, many_to_one):
    ref, pred = multilabel_pair(seed)
    ours = evaluate(ref, pred, spacing=SPACING, threshold=threshold,
                    matching="many_to_one" if many_to_one else "one_to_one", metrics=())
    values, groups = per_value_groups(ref, pred)
    theirs = panoptica(ref, pred, threshold=threshold, many_to_one=many_to_one, groups=groups)
    assert ours.params["label_mode"] == "per_label"
    assert ours.params["label_values"] == values
    assert list(ours.classes) == [str(v) for v in values]
    for v in values:
        c, t = ours[str(v)], theirs[f"v{v}"]
        assert (c.tp, c.fp, c.fn) == (t.tp, t.fp, t.fn), v
        for metric in ("pq", "sq", "rq"):
            assert same(getattr(c, metric), getattr(t, metric)), (v, metric)
    mean = ours.mean_over_classes()
    assert mean["class"] == MEAN_CLASS
    assert (mean["tp"], mean["fp"], mean["fn"]) == tuple(
        sum(getattr(t, k) for t in theirs.values()) for k in ("tp", "fp", "fn"))
    assert same(mean["pq"], np.mean([t.pq for t in theirs.values()]))
    # the wrong value and the value only in the prediction are their own classes
    assert (ours["5"].tp, ours["5"].fn) == (0, 2) and ours["9"].fp == 1


def test_default_does_not_merge_label_values():
    """Two touching values, the second one missed by the prediction: merged, the pair would
    be one matched object (IoU 216/324); each value its own class, value 2 is a miss."""
    ref = np.zeros((10, 14, 10), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[2:8, 8:11, 2:8] = 2
    pred = np.zeros_like(ref)
    pred[2:8, 2:8, 2:8] = 1
    result = evaluate(ref, pred, metrics=())
    assert result.params["label_mode"] == "per_label"
    assert list(result.classes) == ["1", "2"]
    assert (result["1"].tp, result["1"].pq) == (1, 1.0)
    assert (result["2"].tp, result["2"].fn, result["2"].pq) == (0, 1, 0.0)
    frame = result.to_dataframe()
    assert list(frame["class"]) == ["1", "2", MEAN_CLASS]
    assert frame["pq"].iloc[-1] == pytest.approx(0.5)
    as_dict = result.to_dict()
    assert as_dict["params"]["label_mode"] == "per_label"
    assert as_dict["mean_over_classes"]["fn"] == 1
    merged = evaluate(ref, pred, metrics=(), label_mode="merged")
    assert merged.params["label_mode"] == "merged" and merged.mean_over_classes() is None
    assert (merged["all"].tp, merged["all"].pq) == (1, pytest.approx(216 / 324))


def test_a_binary_map_is_one_class_as_before():
    ref = np.zeros((12, 12, 12), np.uint8)
    ref[2:6, 2:6, 2:6] = ref[7:10, 7:10, 7:10] = 1
    pred = np.roll(ref, 1, axis=0)
    for mode in (None, "per_label", "panoptica", "merged"):
        result = evaluate(ref, pred, metrics=(), label_mode=mode)
        assert list(result.classes) == ["all"], mode
        assert result.to_dataframe().shape[0] == 1
    assert evaluate(ref, pred, metrics=()).params["label_mode"] == "binary"
    for mode in (None, "panoptica"):
        a, b = evaluate(ref, pred, label_mode=mode)["all"], evaluate(
            ref, pred, label_mode="merged")["all"]
        assert (a.tp, a.fp, a.fn, a.pq) == (b.tp, b.fp, b.fn, b.pq)


def test_classes_win_and_panoptica_keeps_their_values_apart():
    ref, pred = multilabel_pair(0)
    groups = {"column": [1, 2], "balls": [3, 5, 7], "extra": [9]}
    merged = evaluate(ref, pred, classes=groups, metrics=())
    assert merged.params["label_mode"] == "merged" and list(merged.classes) == list(groups)
    assert merged.mean_over_classes() is None
    assert evaluate(ref, pred, classes=groups, label_mode="per_label",
                    metrics=()).params["label_mode"] == "merged"
    apart = evaluate(ref, pred, classes=groups, label_mode="panoptica", metrics=())
    theirs = panoptica(ref, pred, groups=SegmentationClassGroups(
        {name: LabelGroup(values) for name, values in groups.items()}))
    for name in groups:
        c, t = apart[name], theirs[name]
        assert (c.tp, c.fp, c.fn) == (t.tp, t.fp, t.fn), name
        assert same(c.pq, t.pq)
    assert merged["column"].n_reference == 1 < apart["column"].n_reference


def test_modes_that_do_not_apply_are_refused():
    ref = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(XaimedError, match="label_mode must be one of"):
        evaluate(ref, ref, label_mode="each")
    with pytest.raises(XaimedError, match="instance_input=True"):
        evaluate(ref, ref, instance_input=True, label_mode="panoptica")
    with pytest.raises(XaimedError, match="part-aware"):
        evaluate(ref, ref, parts={"t": {"thing": [1, 2], "parts": {"p": [2]}}},
                 label_mode="panoptica")


def test_value_components_by_scipy_are_cc3ds():
    ref, pred = multilabel_pair(1)
    for labels in (ref, pred):
        for connectivity in (6, 18, 26):
            ours, n = _value_components_scipy(labels, connectivity)
            import cc3d

            theirs, m = cc3d.connected_components(labels, connectivity=connectivity,
                                                  return_N=True)
            assert n == m
            np.testing.assert_array_equal(ours, theirs)
            np.testing.assert_array_equal(value_components(labels, connectivity)[0], theirs)


@pytest.mark.parametrize("mode", ["panoptica", None])
def test_lazy_follows_the_same_modes(mode, tmp_path):
    """Slabs of 5 planes: components of the column cross slab boundaries where values 1 and 2
    touch, and must not join there."""
    import dask.array as da

    ref, pred = multilabel_pair(2)
    lazy = evaluate_lazy(da.from_array(ref, chunks=(5, -1, -1)),
                         da.from_array(pred, chunks=(5, -1, -1)), spacing=SPACING,
                         label_mode=mode, metrics=(), slab=5, workdir=tmp_path)
    if mode == "panoptica":
        theirs = {"all": panoptica(ref, pred)["ungrouped"]}
    else:
        values, groups = per_value_groups(ref, pred)
        theirs = {str(v): t for v, t in zip(values, panoptica(ref, pred, groups=groups).values(),
                                            strict=True)}
    assert lazy.params["label_mode"] == (mode or "per_label")
    assert list(lazy.classes) == list(theirs)
    for name, t in theirs.items():
        c = lazy[name]
        assert (c.tp, c.fp, c.fn) == (t.tp, t.fp, t.fn), name
        for metric in ("pq", "sq", "rq"):
            assert same(getattr(c, metric), getattr(t, metric)), (name, metric)
    in_memory = evaluate(ref, pred, spacing=SPACING, label_mode=mode, metrics=())
    for name, c in in_memory.classes.items():
        assert [(r.reference_ids, r.prediction_ids) for r in c.rows] == [
            (r.reference_ids, r.prediction_ids) for r in lazy[name].rows]


@pytest.mark.parametrize("mode", ["panoptica", None])
def test_autc_passes_the_mode_through(mode):
    ref, pred = multilabel_pair(0)
    thresholds = np.arange(1, 11) / 10
    ours = autc(ref, pred, thresholds, label_mode=mode)
    if mode == "panoptica":
        theirs = {"all": panoptica(ref, pred, autc_step=0.1)["ungrouped"]}
    else:
        values, groups = per_value_groups(ref, pred)
        theirs = {str(v): t for v, t in zip(
            values, panoptica(ref, pred, groups=groups, autc_step=0.1).values(), strict=True)}
    assert ours.label_mode == (mode or "per_label")
    assert list(ours.curves) == list(theirs)
    for name, t in theirs.items():
        for k, threshold in enumerate(thresholds):
            res = t.get_result_at_threshold(threshold)
            assert ours.counts[name][k] == (res.tp, res.fp, res.fn), (name, threshold)
            assert same(ours.curves[name]["pq"][k], res.pq), (name, threshold)
        assert same(ours.area[name]["pq"], t.get_autc("pq")), name


def test_label_values_are_numpys_unique_values():
    """Counted a chunk of 2^20 voxels at a time: values in later chunks, large ids, 0/1 maps."""
    rng = np.random.default_rng(3)
    maps = [np.zeros((8, 400, 400), np.uint16), np.zeros((8, 400, 400), np.int64),
            (rng.random((30, 30, 30)) < 0.2).astype(bool), np.zeros((4, 4, 4), np.uint8)]
    maps[0][7, 399, 390:] = [5, 9, 65535, 9, 5, 1, 2, 3, 4, 7]
    maps[1][6, ::50, ::50] = rng.integers(1, 2**41, (8, 8))
    for labels in maps:
        expected = np.unique(labels)
        np.testing.assert_array_equal(label_values(labels), expected[expected != 0])
    both = np.unique(np.concatenate([np.unique(m) for m in maps[:2]]))
    np.testing.assert_array_equal(label_values(*maps[:2]), both[both != 0])
