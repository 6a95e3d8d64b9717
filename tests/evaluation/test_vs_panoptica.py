"""Cross-check against Panoptica 2.1.7 on seeded random 3D instance maps.

Our conventions were chosen to equal Panoptica's for greedy one-to-one (its
NaiveThresholdMatching), optimal one-to-one (MaxBipartiteMatching) and many-to-one
(NaiveThresholdMatching(allow_many_to_one=True)), with the merged pair accepted as TP only if
it still reaches the threshold (Panoptica's decision metric and threshold). Panoptica is only
called as a library here.

Checked per case: TP/FP/FN exactly; PQ/SQ/RQ to 1e-6; which prediction segments each reference
was matched with (from Panoptica's intermediate steps); per accepted reference the voxel count
exactly and Dice, IoU, ASSD, HD and HD95 (mm, anisotropic spacing) to 1e-6. Also the AUTC
curves and areas against ``Panoptica_Evaluator.evaluate_autc``, and the empty / no-TP cases.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from dataclasses import dataclass

import numpy as np
import pytest
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    MaxBipartiteMatching,
    Metric,
    MetricMode,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.utils.constants import CCABackend
from panoptica.utils.speed_toggles import PanopticaSpeedToggles

from napari_xaimed.evaluation import autc, evaluate
from napari_xaimed.evaluation.instances import class_instances

SPACING = (2.0, 1.0, 0.8)
TOL = 1e-6
SEEDS = (0, 1, 2)
MATCHINGS = {  # our (matching, assignment)
    "greedy": ("one_to_one", "greedy"),
    "optimal": ("one_to_one", "optimal"),
    "many_to_one": ("many_to_one", "greedy"),
}


def test_panoptica_version():
    assert importlib.metadata.version("panoptica") == "2.1.7"


# --------------------------------------------------------------------------------------------
# Seeded random instance maps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    reference: np.ndarray  # int32 instance ids, non-consecutive
    prediction: np.ndarray  # int32 instance ids, non-consecutive
    n_missed: int
    n_split: int
    n_merged: int
    n_false_positive: int


def ball(grid, centre, radius):
    return sum((grid[k] - centre[k]) ** 2 for k in range(3)) <= radius * radius


def rod(grid, a, b, radius=1.5):
    """The segment from a to b, thickened."""
    d = b - a
    t = np.clip(sum((grid[k] - a[k]) * d[k] for k in range(3)) / float(d @ d), 0.0, 1.0)
    return sum((grid[k] - a[k] - t * d[k]) ** 2 for k in range(3)) <= radius * radius


def iou(x, y):
    return np.count_nonzero(x & y) / np.count_nonzero(x | y)


def chain(grid, ca, ra, cb, rb):
    """Two predictions on reference balls a (the larger) and b: P covers most of a, a rod to b
    and part of b; Q the far cap of a. P-a scores highest, so greedy one-to-one takes it and
    leaves b and Q unmatched, while the optimal assignment takes P-b and Q-a (both >= 0.25).
    Returns (P, Q) or None when no cut of a and b gives that."""
    u = (cb - ca) / np.linalg.norm(cb - ca)
    along_a = sum((grid[k] - ca[k]) * u[k] for k in range(3))
    along_b = along_a - float(np.linalg.norm(cb - ca))
    in_a, in_b, in_rod = ball(grid, ca, ra), ball(grid, cb, rb), rod(grid, ca, cb)
    for cap in np.linspace(-0.6, 0.2, 9):
        for part in np.linspace(-0.6, 1.0, 9):
            q = in_a & (along_a < cap * ra)
            p = (in_a | in_rod | (in_b & (along_b < part * rb))) & ~q
            s_pa, s_pb, s_qa = iou(p, in_a), iou(p, in_b), iou(q, in_a)
            if s_pa > max(s_pb, s_qa) and min(s_pb, s_qa) >= 0.25:
                return p, q
    return None


@functools.cache
def make_case(seed: int) -> Case:
    """Non-touching reference balls (radius 3-7). The prediction has shifted/dilated copies,
    ~10% missed, two split by an off-centre plane slab, two pairs of neighbours merged by one
    segment with a rod between them, one chain (where greedy and optimal one-to-one differ) and
    a few false positives."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(48, 65))
    shape = (size, size, size)
    grid = np.indices(shape, dtype=np.float32)

    n_target = int(rng.integers(15, 31))
    centres, radii = [], []
    for _ in range(4000):
        r = float(rng.uniform(3, 7))
        c = rng.uniform(r + 2, size - r - 3, size=3)
        if all(np.linalg.norm(c - c2) > r + r2 + 3 for c2, r2 in zip(centres, radii, strict=True)):
            centres.append(c)
            radii.append(r)
        if len(centres) == n_target:
            break
    n = len(centres)
    centres, radii = np.array(centres), np.array(radii)
    reference = np.zeros(shape, np.int32)
    ref_ids = rng.choice(np.arange(1, 5000), size=n, replace=False)
    for i in range(n):
        reference[ball(grid, centres[i], radii[i])] = ref_ids[i]

    def distance(ab):
        return np.linalg.norm(centres[ab[0]] - centres[ab[1]])

    order = rng.permutation(n).tolist()
    missed, free = order[: round(0.1 * n)], order[round(0.1 * n):]
    splits = [i for i in free if radii[i] >= 4.5][:2]
    free = [i for i in free if i not in splits]
    merges = []
    for _ in range(2):
        i = free[0]
        merges.append((i, min((j for j in free if j != i), key=lambda j: distance((i, j)))))
        free = [k for k in free if k not in merges[-1]]
    pairs = sorted(((a, b) for a in free for b in free if radii[a] > radii[b]), key=distance)
    for a, b in pairs:
        chained = chain(grid, centres[a], radii[a], centres[b], radii[b])
        if chained:
            free = [k for k in free if k not in (a, b)]
            break
    else:
        raise AssertionError(f"seed {seed}: found no chain")

    prediction = np.zeros(shape, np.int32)
    pred_ids = iter(rng.choice(np.arange(1, 2**20), size=2 * n + 20, replace=False).tolist())

    def jittered(i):
        return ball(grid, centres[i] + rng.uniform(-1.0, 1.0, 3),
                    radii[i] + rng.uniform(-0.5, 0.8))

    for i in free:
        prediction[jittered(i)] = next(pred_ids)
    for i in splits:
        mask, axis = jittered(i), int(rng.integers(3))
        cut = centres[i][axis] + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)
        prediction[mask & (grid[axis] < cut - 1.0)] = next(pred_ids)
        prediction[mask & (grid[axis] > cut + 1.0)] = next(pred_ids)
    for i, j in merges:
        prediction[jittered(i) | jittered(j) | rod(grid, centres[i], centres[j])] = next(pred_ids)
    for mask in chained:
        prediction[mask] = next(pred_ids)
    n_fp = int(rng.integers(3, 6))
    for _ in range(n_fp):
        r = float(rng.uniform(2, 4))
        prediction[ball(grid, rng.uniform(r, size - r, size=3), r)] = next(pred_ids)
    return Case(reference, prediction, len(missed), len(splits), len(merges), n_fp)


def test_generator_makes_what_it_says():
    for seed in SEEDS:
        case = make_case(seed)
        ref, pred = case.reference, case.prediction
        ref_ids = np.unique(ref[ref > 0])
        assert 15 <= ref_ids.size <= 30
        assert np.any(np.diff(ref_ids) > 1)  # non-consecutive ids
        # non-touching: the 26-connected components of the mask are the instances
        _, comp_ids = class_instances(ref, None, instance_input=False)
        assert comp_ids.size == ref_ids.size
        assert (case.n_missed, case.n_split, case.n_merged) >= (1, 2, 2)
        assert np.unique(pred[pred > 0]).max() > 10 * ref_ids.size


def test_greedy_and_optimal_differ_somewhere():
    """Otherwise the optimal cases would only repeat the greedy ones."""
    for seed in SEEDS:
        ref, pred = make_case(seed).reference, make_case(seed).prediction
        greedy = evaluate(ref, pred, instance_input=True, threshold=0.2, metrics=())["all"]
        optimal = evaluate(ref, pred, instance_input=True, threshold=0.2, metrics=(),
                           assignment="optimal")["all"]
        assert optimal.tp > greedy.tp


# --------------------------------------------------------------------------------------------
# Running both sides
# --------------------------------------------------------------------------------------------


def panoptica_evaluator(*, matching, assignment, threshold, match_metric, instance_input,
                        instance_metrics=None):
    metric = Metric.IOU if match_metric == "iou" else Metric.DSC
    if assignment == "optimal":
        matcher = MaxBipartiteMatching(matching_metric=metric, matching_threshold=threshold)
    else:
        matcher = NaiveThresholdMatching(matching_metric=metric, matching_threshold=threshold,
                                         allow_many_to_one=matching == "many_to_one")
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.UNMATCHED_INSTANCE if instance_input else InputType.SEMANTIC,
        # cc3d's default connectivity in 3D is 26, as ours
        instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
        instance_matcher=matcher,
        instance_metrics=instance_metrics or [Metric.DSC, Metric.IOU, Metric.ASSD, Metric.HD,
                                              Metric.HD95],
        decision_metric=metric,
        decision_threshold=threshold,
        # no crop, so the intermediate label maps have the input's shape (cropping is a pure
        # speed-up in Panoptica: it does not change any result)
        speed_toggles=PanopticaSpeedToggles(crop_at_start=False),
    )
    return evaluator


def both(seed, matching_key, threshold, match_metric, instance_input):
    case = make_case(seed)
    ref, pred = case.reference, case.prediction
    if not instance_input:
        ref, pred = (ref > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    matching, assignment = MATCHINGS[matching_key]
    ours = evaluate(ref, pred, spacing=SPACING, matching=matching, assignment=assignment,
                    threshold=threshold, match_metric=match_metric,
                    instance_input=instance_input, metrics=("hd", "hd95", "assd"))["all"]
    evaluator = panoptica_evaluator(matching=matching, assignment=assignment, threshold=threshold,
                                    match_metric=match_metric, instance_input=instance_input)
    theirs = evaluator.evaluate(pred, ref, voxelspacing=SPACING, log_intermediate_steps=True)
    return ref, pred, ours, theirs["ungrouped"]


def close(a, b, tol=TOL):
    return math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=tol)


def panoptica_groups(result):
    """{reference id: prediction ids} of Panoptica's matching, in the ids of its instance maps
    (input ids for instance input, connected-component numbers for semantic input)."""
    steps = result.intermediate_steps_data
    unmatched = steps["UNMATCHED_INSTANCE"]
    matched = steps["MATCHED_INSTANCE"]
    ref_labels = set(np.unique(matched.reference_arr).tolist()) - {0}
    groups = {}
    for label in sorted(set(np.unique(matched.prediction_arr).tolist()) & ref_labels):
        preds = np.unique(unmatched.prediction_arr[matched.prediction_arr == label])
        groups[label] = tuple(preds.tolist())
    return unmatched, groups


CASES = [
    pytest.param(seed, key, thr, mm, inst,
                 id=f"s{seed}-{key}-t{thr}-{mm}-{'inst' if inst else 'sem'}")
    for seed in SEEDS
    for key in MATCHINGS
    for thr in (0.5, 0.2)
    for mm, inst in (("iou", True), ("iou", False))
] + [
    pytest.param(seed, key, thr, "dice", inst,
                 id=f"s{seed}-{key}-t{thr}-dice-{'inst' if inst else 'sem'}")
    for seed, key, thr, inst in (
        (0, "greedy", 0.5, True), (1, "many_to_one", 0.3, False), (2, "optimal", 0.7, True),
        (0, "many_to_one", 0.5, True),
    )
]


@pytest.mark.parametrize(("seed", "matching_key", "threshold", "match_metric",
                          "instance_input"), CASES)
def test_same_as_panoptica(seed, matching_key, threshold, match_metric, instance_input):
    ref, pred, ours, theirs = both(seed, matching_key, threshold, match_metric, instance_input)

    # Instances: for semantic input both sides take 26-connected components, and number them
    # alike (raster order of first voxel), so ids can be compared directly.
    unmatched, their_groups = panoptica_groups(theirs)
    if not instance_input:
        ref_map, _ = class_instances(ref, None, instance_input=False, connectivity=26)
        pred_map, _ = class_instances(pred, None, instance_input=False, connectivity=26)
        assert np.array_equal(ref_map, unmatched.reference_arr)
        assert np.array_equal(pred_map, unmatched.prediction_arr)
    assert ours.n_reference == np.unique(unmatched.reference_arr).size - 1
    assert ours.n_prediction == np.unique(unmatched.prediction_arr).size - 1

    # The matching itself: every reference's partners (accepted or not).
    our_groups = {r.reference_ids[0]: r.prediction_ids for r in ours.rows}
    assert all(len(r.reference_ids) == 1 for r in ours.rows)
    assert our_groups == their_groups

    # Counts and qualities.
    assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn)
    sq, pq = (theirs.sq, theirs.pq) if match_metric == "iou" else (theirs.sq_dsc, theirs.pq_dsc)
    assert close(ours.rq, theirs.rq)
    assert close(ours.sq, sq)
    assert close(ours.pq, pq)

    # Per accepted reference: Panoptica lists them in increasing reference id.
    accepted = sorted((r for r in ours.rows if r.accepted), key=lambda r: r.reference_ids)
    assert [r.reference_voxels for r in accepted] == theirs.instance_voxel_count_matched_ref_list
    for name, metric in (("dice", Metric.DSC), ("iou", Metric.IOU), ("assd", Metric.ASSD),
                         ("hd", Metric.HD), ("hd95", Metric.HD95)):
        values = theirs.get_list_metric(metric, MetricMode.ALL)
        assert len(values) == len(accepted)
        for row, value in zip(accepted, values, strict=True):
            assert close(getattr(row, name), value), (name, row.reference_ids,
                                                      getattr(row, name), value)


@pytest.mark.parametrize(("seed", "matching_key", "match_metric", "instance_input"), [
    (0, "greedy", "iou", True),
    (1, "optimal", "iou", False),
    (2, "many_to_one", "iou", False),
    (1, "many_to_one", "dice", True),
])
def test_autc_same_as_panoptica(seed, matching_key, match_metric, instance_input):
    case = make_case(seed)
    ref, pred = case.reference, case.prediction
    if not instance_input:
        ref, pred = (ref > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    matching, assignment = MATCHINGS[matching_key]
    thresholds = np.arange(1, 11) / 10  # Panoptica's threshold_step_size=0.1 grid
    ours = autc(ref, pred, thresholds, matching=matching, assignment=assignment,
                match_metric=match_metric, instance_input=instance_input)
    evaluator = panoptica_evaluator(matching=matching, assignment=assignment, threshold=0.5,
                                    match_metric=match_metric, instance_input=instance_input,
                                    instance_metrics=[Metric.DSC, Metric.IOU])
    theirs = evaluator.evaluate_autc(pred, ref, threshold_step_size=0.1)["ungrouped"]
    assert theirs.thresholds == thresholds.tolist()
    suffix = "" if match_metric == "iou" else "_dsc"
    for k, t in enumerate(thresholds):
        res = theirs.get_result_at_threshold(t)
        assert ours.counts["all"][k] == (res.tp, res.fp, res.fn), t
        assert close(ours.curves["all"]["rq"][k], res.rq), t
        for m in ("sq", "pq"):
            assert close(ours.curves["all"][m][k], getattr(res, m + suffix)), (m, t)
    for m in ("pq", "sq", "rq"):
        assert close(ours.area["all"][m], theirs.get_autc(m + suffix if m != "rq" else m)), m


EMPTY_CASES = {  # reference cube id 7; prediction: nothing, a far cube, or the same
    "empty prediction": ((1, 5), None),
    "empty reference": (None, (8, 11)),
    "both empty": (None, None),
    "no overlap": ((1, 5), (8, 11)),
}


@pytest.mark.parametrize("instance_input", [True, False])
@pytest.mark.parametrize("name", list(EMPTY_CASES))
def test_empty_and_no_tp_like_panoptica(name, instance_input):
    """Both give 0 for PQ/SQ/RQ when one side is empty or nothing matches, NaN when both are
    empty. (Panoptica cannot give distance metrics without a TP, so only overlap metrics.)"""
    ref, pred = np.zeros((12, 12, 12), np.int32), np.zeros((12, 12, 12), np.int32)
    ref_span, pred_span = EMPTY_CASES[name]
    if ref_span:
        ref[tuple(slice(*ref_span) for _ in range(3))] = 7
    if pred_span:
        pred[tuple(slice(*pred_span) for _ in range(3))] = 3
    if not instance_input:
        ref, pred = (ref > 0).astype(np.uint8), (pred > 0).astype(np.uint8)
    ours = evaluate(ref, pred, instance_input=instance_input, metrics=())["all"]
    evaluator = panoptica_evaluator(matching="one_to_one", assignment="greedy",
                                    threshold=0.5, match_metric="iou",
                                    instance_input=instance_input,
                                    instance_metrics=[Metric.DSC, Metric.IOU])
    theirs = evaluator.evaluate(pred, ref)["ungrouped"]
    assert (ours.tp, ours.fp, ours.fn) == (theirs.tp, theirs.fp, theirs.fn)
    for m in ("pq", "sq", "rq"):
        a, b = getattr(ours, m), getattr(theirs, m)
        assert (math.isnan(a) and math.isnan(b)) or close(a, b), m
