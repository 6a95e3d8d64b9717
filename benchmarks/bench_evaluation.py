"""Benchmark: our panoptic evaluation, AUTC, Voronoi and part-aware PQ against Panoptica.

Run ``python benchmarks/bench_evaluation.py`` (128^3 and 256^3), with ``--quick`` (128^3 only) and
with ``--cases voronoi,parts`` (any of plain, autc, voronoi, parts, instance, regions; default
all) to pick cases; ``--cases instance`` times instance-map input alone.

Inputs (seeded): reference = non-overlapping balls, radius 4-8 voxels (128^3: 50, 256^3: 300);
prediction = each ball shifted by up to 1.5 voxels per axis (radius jittered), 10% missed, 5%
split in two by a 2-voxel slab, 10% extra false-positive balls. Both are passed as binary uint8
masks (semantic input): instances are 26-connected components on both sides. The part-aware case
uses the same balls as semantic maps: value 1 for the thing, value 2 for a core ball of half the
radius at the same centre (cut by the same slab), so its things are exactly the binary balls.

The instance case has inputs of its own: the same kind of balls (128^3: 50, 256^3: 300), given as
unmatched instance maps whose ids are scattered over 1..3000 (uint16, and the same maps as int32);
in the prediction 10% of the references are missed, 10% split in two touching halves (two ids)
and 10% extra balls are false positives.

Cases
-----
plain   : one-to-one greedy matching at IoU >= 0.5 with per-instance Dice, IoU, ASSD and HD95.
          Ours: ``evaluate(..., metrics=("hd95", "assd"))`` (Dice and IoU always come).
          Panoptica: SEMANTIC + ConnectedComponentsInstanceApproximator, NaiveThresholdMatching,
          instance_metrics [DSC, IOU, ASSD, HD95], decision IoU >= 0.5 (its default global DSC
          is left on).
autc    : PQ/SQ/RQ curves over thresholds 0.1, 0.2, ..., 1.0 and their areas.
          Ours: ``autc(..., thresholds=0.1..1.0)``: components and overlap table once, then
          only the matching per threshold; no distance metrics.
          Panoptica: ``evaluate_autc(threshold_step_size=0.1)``: components once, then the full
          matching + instance evaluation per threshold, with instance_metrics [DSC, IOU] only
          (the least it needs for SQ/PQ; the distance metrics would cost it 10x more).
voronoi : region-wise evaluation: every voxel goes to its nearest reference instance, and the
          prediction is judged inside each reference's region.
          Ours: ``evaluate(..., voronoi=True, metrics=("hd95", "assd"), keep_maps=False)``: the
          plain one-to-one matching with HD95/ASSD per TP, plus per region Dice, IoU, HD95 and
          ASSD of all the prediction inside it (the time with ``metrics=()`` is printed too).
          Panoptica: ``Panoptica_Evaluator(per_region_evaluation=True)`` set up as its
          configs/panoptica_config_voronoi.yaml (SEMANTIC, connected components, matching by
          DSC >= 0.0 inside each region, global DSC, no decision metric), one ungrouped class
          for our binary input, instance_metrics [DSC, IOU, ASSD] instead of the config's
          [DSC, ASSD, CEDI]: CEDI raises NotImplementedError on a region with no prediction.
          ``--skip-panoptica-voronoi-256`` skips it at 256^3 (~3 minutes), printing
          "skipped (too slow)" and the field notes' figure instead. Panoptica returns only
          the mean of its per-region Dice (``region_avg_dsc``); its region count is read by
          wrapping its ``_get_voronoi_regions`` (observation only).
parts   : part-aware evaluation at 128^3 (50 things): thing = values {1, 2}, part "core" = 2.
          Ours: ``evaluate(sem_ref, sem_pred, parts={"thing": {"thing": [1, 2], "parts":
          {"core": [2]}}}, metrics=())``, one-to-one greedy at IoU >= 0.5 on the things.
          Panoptica: SegmentationClassGroups({"thing": LabelPartGroup(thing_labels=[1],
          part_labels=[2])}), NaiveThresholdMatching IoU >= 0.5, instance_metrics [DSC, IOU],
          decision IoU >= 0.5. Definitions differ (it matches on the mean of thing and part
          scores and pools parts across things), so only timings and thing-level TP/FP/FN are
          reported, not compared.
instance: the instance maps above (``instance_input=True``), one-to-one greedy at IoU >= 0.5,
          for uint16 and int32 ids, "counts" (TP/FP/FN, PQ, Dice, IoU: ours ``metrics=()``,
          Panoptica instance_metrics [DSC, IOU]) and "hd95" (also HD95 and ASSD per TP: ours
          ``metrics=("hd95", "assd")``, Panoptica [DSC, IOU, ASSD, HD95]).
          Panoptica: UNMATCHED_INSTANCE input, NaiveThresholdMatching, decision IoU >= 0.5
          (its default global DSC left on). "warm": best of 3 calls in this process, both
          sides; "cold": the first call in a fresh Python process (``cold_evaluation.py``,
          best of 3 processes each; the inputs are loaded before the clock starts), with the
          import time of each package (ours ``napari_xaimed.evaluation``, theirs ``panoptica``)
          printed beside it, not added to it. Counts, PQ and the per-TP HD95/ASSD lists of
          every run (warm and cold) are compared with Panoptica's.

defaults: both sides on their defaults (issue 31): ours ``evaluate(ref, pred)`` (HD, HD95,
          directed HD95, ASSD and NSD per TP) and with ``instance_input=True``; Panoptica
          ``Panoptica_Evaluator`` with what its input type needs and nothing else: binary
          (SEMANTIC) input ``instance_approximator=ConnectedComponentsInstanceApproximator()``,
          instance ids UNMATCHED_INSTANCE; ``instance_matcher=NaiveThresholdMatching()``
          (IoU >= 0.5) on both, its default instance metrics (DSC, IOU, ASSD, RVD) and global
          DSC. Binary input: the plain case's masks; instance input: the instance case's
          uint16 maps. Best of 3, ours and Panoptica alternating; counts, PQ and the per-TP
          ASSD lists compared. Target: >= 10x at 128^3 and 256^3.
vscale  : ``evaluate(ref, pred, voronoi=True)`` on defaults (binary input) at 64^3, 128^3 and
          256^3 (7, 50, 300 balls), best of 3, and the time ratio of each size to the one
          below (8 = linear in the volume).

regions : the Voronoi regions alone (``voronoi.voronoi_regions`` on the reference's 26-connected
          components, 1 mm) against scipy's ``distance_transform_edt(return_indices=True)`` and a
          lookup, which computed them before (the regions are checked equal); the 256^3 / 128^3
          time ratio of each is printed at the end (8 = linear in the volume), and the
          one-off cost of loading the compiled kernel in a fresh process (``nearest.py``).

Timings are the best of N runs (ours N=3; Panoptica N=3 at 128^3, N=1 at 256^3), printed with
their median and range; a ratio is the ratio of the best times with its range over the pairs of
runs (the instance rows run ours and Panoptica back to back; elsewhere every run of one is set
against every run of the other). Our peak
memory is measured with tracemalloc (numpy allocations are traced) over a separate plain run,
as a multiple of the two input volumes' bytes (2 x uint8 masks).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import tracemalloc
from dataclasses import dataclass
from unittest import mock

import numpy as np
from _timing import Timing, alternate, measure, ratio

from napari_xaimed.evaluation import autc, evaluate

CASES = ("plain", "autc", "voronoi", "parts", "instance", "regions", "defaults", "vscale")
THRESHOLDS = np.arange(1, 11) / 10  # 0.1 ... 1.0, the same floats as Panoptica's grid
# plain/autc: least speed-up over Panoptica; memory: most peak / input bytes;
# voronoi (256^3) and parts (128^3): most seconds of ours.
TARGETS = {"plain": 10.0, "autc": 20.0, "memory": 3.0, "voronoi": 5.0, "parts": 1.0,
           "instance": 10.0, "defaults": 10.0}
# Voronoi scaling case: sizes and reference balls (about the same density as 128^3 / 50).
VSCALE = ((64, 7), (128, 50), (256, 300))
INSTANCE_MAX_ID = 3000
INSTANCE_METRICS = {"counts": (), "hd95": ("hd95", "assd")}  # Panoptica: DSC, IOU + these
COLD_PROCESSES = 3
# Panoptica's region-wise evaluation at 256^3 / 300 instances in the field notes (2-core machine
# of this kind); printed in its place when --skip-panoptica-voronoi-256 skips it (measured at
# ~160 s in this benchmark's setup, so it runs by default).
PANOPTICA_VORONOI_256_S = 634.0
PARTS = {"thing": {"thing": [1, 2], "parts": {"core": [2]}}}


@dataclass
class Row:
    """One table row. ``kind``: "ratio" (target = least peer/ours), "seconds" (target =
    most seconds of ours; None for none) or "memory" (ours = peak bytes, theirs = input bytes).
    The peer is Panoptica, or for the regions rows scipy's EDT. ``theirs`` None: the peer not
    run, ``skipped`` says why."""

    name: str
    ours: Timing | float
    theirs: Timing | float | None
    kind: str
    target: float | None
    skipped: str = ""


def paint_ball(volume, centre, radius, value, keep=None):
    """Set the voxels of a ball to ``value`` (only inside ``keep(z, y, x)`` when given)."""
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, volume.shape)
    z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    mask = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
    if keep is not None:
        mask &= keep(z, y, x)
    volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][mask] = value


def paint_thing(volume, centre, radius, core, keep=None):
    """A ball of 1, with (``core``) a ball of 2 of half the radius at its centre."""
    paint_ball(volume, centre, radius, 1, keep)
    if core:
        paint_ball(volume, centre, radius / 2, 2, keep)


def place_balls(rng: np.random.Generator, size: int, n: int
                ) -> tuple[list[np.ndarray], list[float]]:
    """``n`` centres and radii (4-8 voxels) of balls that keep 2 voxels apart inside a
    ``size``³ grid, drawn from ``rng``."""
    centres, radii = [], []
    while len(centres) < n:
        r = rng.uniform(4, 8)
        c = rng.uniform(r + 1, size - r - 2, 3)
        if all(np.linalg.norm(c - c2) > r + r2 + 2 for c2, r2 in zip(centres, radii, strict=True)):
            centres.append(c)
            radii.append(r)
    return centres, radii


def make_inputs(size: int, n: int, seed: int, core: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction (uint8), see the module docstring: binary masks, or with
    ``core`` semantic maps of things (1) with cores (2) whose nonzero voxels are the same
    masks (the core draws no random numbers)."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    centres, radii = place_balls(rng, size, n)
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    roles = rng.permutation(n)
    n_missed, n_split = round(0.1 * n), round(0.05 * n)
    for k, i in enumerate(roles):
        c, r = centres[i], radii[i]
        paint_thing(reference, c, r, core)
        if k < n_missed:
            continue
        c_pred, r_pred = c + rng.uniform(-1.5, 1.5, 3), r + rng.uniform(-0.5, 0.5)
        if k < n_missed + n_split:
            axis = int(rng.integers(3))
            cut = c_pred[axis] + rng.uniform(-1.5, 1.5)

            def outside_slab(z, y, x, axis=axis, cut=cut):
                return np.abs((z, y, x)[axis] - cut) >= 1.0

            paint_thing(prediction, c_pred, r_pred, core, keep=outside_slab)
        else:
            paint_thing(prediction, c_pred, r_pred, core)
    for _ in range(round(0.1 * n)):
        r = rng.uniform(3, 6)
        paint_thing(prediction, rng.uniform(r, size - r, 3), r, core)
    return reference, prediction


def make_instance_inputs(size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference and prediction instance maps (uint16), see the module docstring: ``n``
    non-overlapping balls with ids drawn from 1..3000; the prediction misses 10%, splits 10%
    into two touching halves with ids of their own, and adds 10% false-positive balls."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    centres, radii = place_balls(rng, size, n)
    n_missed, n_split, n_fp = round(0.1 * n), round(0.1 * n), round(0.1 * n)
    ids = np.arange(1, INSTANCE_MAX_ID + 1)
    ref_ids = rng.choice(ids, n, replace=False)
    pred_ids = iter(rng.choice(ids, n + n_split + n_fp, replace=False).tolist())
    reference = np.zeros(shape, np.uint16)
    prediction = np.zeros(shape, np.uint16)
    for k, i in enumerate(rng.permutation(n)):
        c, r = centres[i], radii[i]
        paint_ball(reference, c, r, ref_ids[i])
        if k < n_missed:
            continue
        c_pred, r_pred = c + rng.uniform(-1.5, 1.5, 3), r + rng.uniform(-0.5, 0.5)
        if k < n_missed + n_split:
            axis = int(rng.integers(3))
            cut = c_pred[axis] + rng.uniform(-1.5, 1.5)
            for below in (True, False):

                def half(z, y, x, axis=axis, cut=cut, below=below):
                    return ((z, y, x)[axis] < cut) == below

                paint_ball(prediction, c_pred, r_pred, next(pred_ids), keep=half)
        else:
            paint_ball(prediction, c_pred, r_pred, next(pred_ids))
    for _ in range(n_fp):
        r = rng.uniform(3, 6)
        paint_ball(prediction, rng.uniform(r, size - r, 3), r, next(pred_ids))
    return reference, prediction


def best_of(fn, repeats: int) -> tuple[Timing, object]:
    """Every run's seconds (printed as best, median, range) and the last result."""
    timing = measure(fn, repeats)
    return timing, timing.result


def panoptica_evaluator(instance_metrics):
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )

    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        instance_metrics=[getattr(Metric, m) for m in instance_metrics],
        decision_metric=Metric.IOU,
        decision_threshold=0.5,
    )


def panoptica_voronoi_evaluator():
    """Region-wise Panoptica as in its configs/panoptica_config_voronoi.yaml (see docstring)."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )

    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.DSC,
                                                matching_threshold=0.0),
        instance_metrics=[Metric.DSC, Metric.IOU, Metric.ASSD],
        global_metrics=[Metric.DSC],
        decision_metric=None,
        decision_threshold=None,
        per_region_evaluation=True,
    )


def panoptica_parts_evaluator():
    """Part-aware Panoptica: one LabelPartGroup, thing 1 and part 2."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.utils.label_group import LabelPartGroup
    from panoptica.utils.segmentation_class import SegmentationClassGroups

    return Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        instance_metrics=[Metric.DSC, Metric.IOU],
        decision_metric=Metric.IOU,
        decision_threshold=0.5,
        segmentation_class_groups=SegmentationClassGroups(
            {"thing": LabelPartGroup(thing_labels=[1], part_labels=[2])}),
    )


def quiet(fn):
    """Run ``fn`` with Panoptica's citation banner swallowed."""
    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            return fn()
    return run


def ours_plain(ref, pred):
    return evaluate(ref, pred, matching="one_to_one", assignment="greedy", threshold=0.5,
                    match_metric="iou", metrics=("hd95", "assd"))["all"]


def ours_autc(ref, pred):
    return autc(ref, pred, THRESHOLDS, matching="one_to_one", match_metric="iou")


def ours_voronoi(ref, pred, metrics=("hd95", "assd")):
    return evaluate(ref, pred, matching="one_to_one", assignment="greedy", threshold=0.5,
                    match_metric="iou", voronoi=True, metrics=metrics, keep_maps=False)["all"]


def ours_parts(ref_sem, pred_sem):
    return evaluate(ref_sem, pred_sem, matching="one_to_one", assignment="greedy", threshold=0.5,
                    match_metric="iou", parts=PARTS, metrics=())["thing"]


def panoptica_voronoi_run(evaluator, ref, pred, region_counts: list):
    """One region-wise evaluation; appends Panoptica's number of Voronoi regions."""
    import panoptica.panoptica_pipeline as pipeline

    real = pipeline._get_voronoi_regions

    def recording(arr, n_ref_instances):
        region_map, n_regions = real(arr, n_ref_instances)
        region_counts.append(int(n_regions))
        return region_map, n_regions

    with mock.patch.object(pipeline, "_get_voronoi_regions", recording):
        return evaluator.evaluate(pred, ref)["ungrouped"]


def peak_memory(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def same_text(ok: bool) -> str:
    return "same" if ok else "DIFFERENT"


def case_plain(ref, pred, size, panoptica_repeats, rows):
    t_ours, res = best_of(lambda: ours_plain(ref, pred), 3)
    plain = panoptica_evaluator(["DSC", "IOU", "ASSD", "HD95"])
    t_pan, pan = best_of(quiet(lambda: plain.evaluate(pred, ref)["ungrouped"]),
                         panoptica_repeats)
    same = (res.tp, res.fp, res.fn) == (pan.tp, pan.fp, pan.fn) and abs(res.pq - pan.pq) < 1e-9
    print(f"  plain:   ours TP/FP/FN {res.tp}/{res.fp}/{res.fn} PQ {res.pq:.6f}; panoptica "
          f"{pan.tp}/{pan.fp}/{pan.fn} PQ {pan.pq:.6f} ({same_text(same)})")
    # The 10x target is set against Panoptica's ~4 s at 256^3 (the figure); at 128^3
    # both take tens of milliseconds and the ratio is printed without a target.
    rows.append(Row(f"plain {size}^3", t_ours, t_pan, "ratio",
                    TARGETS["plain"] if size >= 256 else None))
    peak = peak_memory(lambda: ours_plain(ref, pred))
    rows.append(Row(f"peak mem plain {size}^3", peak, ref.nbytes + pred.nbytes, "memory",
                    TARGETS["memory"]))


def case_autc(ref, pred, size, panoptica_repeats, rows):
    t_ours, res = best_of(lambda: ours_autc(ref, pred), 3)
    curve = panoptica_evaluator(["DSC", "IOU"])
    t_pan, pan = best_of(
        quiet(lambda: curve.evaluate_autc(pred, ref, threshold_step_size=0.1)["ungrouped"]),
        panoptica_repeats)
    ours_area = [res.area["all"][m] for m in ("pq", "sq", "rq")]
    their_area = [pan.get_autc(m) for m in ("pq", "sq", "rq")]
    same = np.allclose(ours_area, their_area, rtol=0, atol=1e-9)
    print("  autc:    area PQ/SQ/RQ ours " + "/".join(f"{v:.6f}" for v in ours_area)
          + "; panoptica " + "/".join(f"{v:.6f}" for v in their_area)
          + f" ({same_text(same)})")
    rows.append(Row(f"autc 10 thr {size}^3", t_ours, t_pan, "ratio", TARGETS["autc"]))


def case_voronoi(ref, pred, size, panoptica_repeats, rows, run_panoptica: bool):
    t_ours, res = best_of(lambda: ours_voronoi(ref, pred), 3)
    t_bare, bare = best_of(lambda: ours_voronoi(ref, pred, metrics=()), 3)
    ours_dice = res.summary()["region_mean_dice"]
    print(f"  voronoi: ours {len(res.regions)} regions, mean per-region Dice {ours_dice:.6f}\n"
          f"           ({t_ours} with hd95+assd; {t_bare} with metrics=(), "
          f"{len(bare.regions)} regions)")
    target = TARGETS["voronoi"] if size >= 256 else None
    if not run_panoptica:
        print(f"           panoptica skipped (too slow): ~{PANOPTICA_VORONOI_256_S:.0f} s at "
              "256^3 in the field notes,\n           not measured in this run "
              f"(~{PANOPTICA_VORONOI_256_S / t_ours.best:.0f}x ours)")
        rows.append(Row(f"voronoi {size}^3", t_ours, None, "seconds", target,
                        skipped="skipped (too slow)"))
        return
    evaluator = panoptica_voronoi_evaluator()
    counts: list[int] = []
    t_pan, pan = best_of(quiet(lambda: panoptica_voronoi_run(evaluator, ref, pred, counts)),
                         panoptica_repeats)
    their_dice = float(pan.region_avg_dsc)
    same_count = counts[-1] == len(res.regions)
    same_dice = abs(ours_dice - their_dice) < 1e-9
    print(f"           panoptica {counts[-1]} regions ({same_text(same_count)}), mean "
          f"per-region Dice {their_dice:.6f} ({same_text(same_dice)})")
    print("           note: both give each voxel to its nearest reference voxel (scipy EDT "
          "feature transform;\n           ours in mm, Panoptica in voxels: equal at this 1 mm "
          "spacing) and take a region's Dice\n           as all prediction inside it vs its "
          "reference instance; Panoptica returns only the mean\n           over regions "
          "(region_avg_dsc), so per-region values are compared through that mean.")
    rows.append(Row(f"voronoi {size}^3", t_ours, t_pan, "seconds", target))


def case_parts(size, n, seed, panoptica_repeats, rows):
    ref_sem, pred_sem = make_inputs(size, n, seed, core=True)
    t_ours, res = best_of(lambda: ours_parts(ref_sem, pred_sem), 3)
    evaluator = panoptica_parts_evaluator()
    t_pan, pan = best_of(quiet(lambda: evaluator.evaluate(pred_sem, ref_sem)["thing"]),
                         panoptica_repeats)
    print(f"  parts:   things TP/FP/FN ours {res.tp}/{res.fp}/{res.fn} (part-aware PQ "
          f"{res.part_aware_pq:.4f}, core SQ {res.part_sq['core']:.4f});\n"
          f"           panoptica {pan.tp}/{pan.fp}/{pan.fn} (PQ {pan.pq:.4f})")
    print("           note: not compared: ours matches things on the whole thing (IoU >= 0.5) "
          "and scores each\n           part inside its matched pair; Panoptica matches on "
          "(thing IoU + part IoUs) / (1 + n parts)\n           >= 0.5, pools parts across "
          "things and hard-codes the thing channel;\n           halves a pair's score when only "
          "one side has parts.")
    rows.append(Row(f"parts {size}^3", t_ours, t_pan, "seconds", TARGETS["parts"]))


def same_summary(a: dict, b: dict) -> bool:
    """Equal counts, PQ to 1e-9 and per-TP distance lists to 1e-9 mm."""
    if (a["tp"], a["fp"], a["fn"]) != (b["tp"], b["fp"], b["fn"]) or abs(a["pq"] - b["pq"]) > 1e-9:
        return False
    return all(k in a and k in b and len(a[k]) == len(b[k])
               and np.allclose(a[k], b[k], rtol=0, atol=1e-9)
               for k in ("hd95", "assd") if k in a or k in b)


def cold_run(who: str, ref_path: str, pred_path: str, metrics: tuple[str, ...]) -> dict:
    """First call in each of :data:`COLD_PROCESSES` fresh processes (``cold_evaluation.py``):
    the best one's result, and the least import time."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("cold_evaluation.py")
    runs = []
    for _ in range(COLD_PROCESSES):
        out = subprocess.run([sys.executable, str(script), who, ref_path, pred_path,
                              ",".join(metrics) or "-"],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["first"])
    return {**best, "import": min(r["import"] for r in runs),
            "firsts": Timing([r["first"] for r in runs])}


def case_instance(size, n, seed, rows):
    import tempfile
    from pathlib import Path

    from cold_evaluation import ours, panoptica, summary

    ref16, pred16 = make_instance_inputs(size, n, seed)
    inputs = {"uint16": (ref16, pred16),
              "int32": (ref16.astype(np.int32), pred16.astype(np.int32))}
    target = TARGETS["instance"] if size >= 256 else None
    print(f"  instance: {len(np.unique(ref16)) - 1} reference / {len(np.unique(pred16)) - 1} "
          f"prediction ids in 1..{INSTANCE_MAX_ID}")
    with tempfile.TemporaryDirectory() as folder:
        for dtype, (ref, pred) in inputs.items():
            paths = (str(Path(folder) / f"reference_{dtype}.npy"),
                     str(Path(folder) / f"prediction_{dtype}.npy"))
            np.save(paths[0], ref)
            np.save(paths[1], pred)
            for kind, metrics in INSTANCE_METRICS.items():
                t_ours, t_pan = alternate(lambda r=ref, p=pred, m=metrics: ours(r, p, m),
                                          lambda r=ref, p=pred, m=metrics: panoptica(r, p, m), 3)
                res, pan = t_ours.result, t_pan.result
                ours_sum, their_sum = summary(res, metrics, True), summary(pan, metrics, False)
                cold_ours = cold_run("ours", *paths, metrics)
                cold_pan = cold_run("panoptica", *paths, metrics)
                same = (same_summary(ours_sum, their_sum) and same_summary(cold_ours, ours_sum)
                        and same_summary(cold_pan, their_sum))
                print(f"  {dtype:>6} {kind:<6}: TP/FP/FN {res.tp}/{res.fp}/{res.fn} PQ "
                      f"{res.pq:.6f}" + (", per-TP HD95/ASSD" if metrics else "")
                      + f" vs panoptica ({same_text(same)}); import ours "
                      f"{cold_ours['import']:.2f} s, panoptica {cold_pan['import']:.2f} s")
                rows.append(Row(f"inst {dtype} {kind} {size}^3", t_ours, t_pan, "ratio",
                                target))
                rows.append(Row(f"inst {dtype} {kind} cold {size}^3", cold_ours["firsts"],
                                cold_pan["firsts"], "ratio", target))


def panoptica_default_evaluator(instance_input: bool):
    """Panoptica on its defaults, with only what its input type requires (see docstring)."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )

    if instance_input:
        return Panoptica_Evaluator(expected_input=InputType.UNMATCHED_INSTANCE,
                                   instance_matcher=NaiveThresholdMatching())
    return Panoptica_Evaluator(expected_input=InputType.SEMANTIC,
                               instance_approximator=ConnectedComponentsInstanceApproximator(),
                               instance_matcher=NaiveThresholdMatching())


def case_defaults(ref, pred, size, n, seed, rows):
    from cold_evaluation import summary

    inputs = {"binary": (ref, pred, False), "instance": (*make_instance_inputs(size, n, seed),
                                                         True)}
    for kind, (r, p, instance_input) in inputs.items():
        evaluator = panoptica_default_evaluator(instance_input)
        t_ours, t_pan = alternate(
            lambda r=r, p=p, i=instance_input: evaluate(r, p, instance_input=i)["all"],
            quiet(lambda r=r, p=p, e=evaluator: e.evaluate(p, r)["ungrouped"]), 3)
        res, pan = t_ours.result, t_pan.result
        same = same_summary(summary(res, ("assd",), True), summary(pan, ("assd",), False))
        print(f"  defaults {kind:>8}: TP/FP/FN {res.tp}/{res.fp}/{res.fn} PQ {res.pq:.6f}, "
              f"per-TP ASSD vs panoptica ({same_text(same)});\n"
              f"           ours {t_ours}, panoptica {t_pan}, ratio {ratio(t_pan, t_ours)}")
        rows.append(Row(f"default {kind} {size}^3", t_ours, t_pan, "ratio",
                        TARGETS["defaults"]))


def case_vscale(rows) -> None:
    """Voronoi on defaults at 64^3, 128^3 and 256^3 and the growth from size to size."""
    print("\nVoronoi on defaults, evaluate(ref, pred, voronoi=True), binary input")
    timings = []
    for size, n in VSCALE:
        ref, pred = make_inputs(size, n, seed=1)
        evaluate(ref, pred, voronoi=True)  # the kernel loaded, where the size takes it
        t = measure(lambda r=ref, p=pred: evaluate(r, p, voronoi=True), 3)
        res = t.result["all"]
        grow = f", x{ratio(t, timings[-1]).text(1)} the size below" if timings else ""
        print(f"  {size}^3 ({n} balls, {len(res.regions)} regions): {t}{grow}")
        timings.append(t)
        rows.append(Row(f"voronoi default {size}^3", t, None, "seconds", None))


def scipy_regions(ref_map):
    """The Voronoi regions as scipy's feature transform gives them (the former code)."""
    from scipy import ndimage as ndi

    indices = ndi.distance_transform_edt(ref_map == 0, return_distances=False,
                                         return_indices=True)
    return ref_map[tuple(indices)]


def kernel_load_seconds() -> float:
    """Seconds a fresh process spends importing numba and loading the compiled kernel (from
    its cache) before its first use (nearest.py's threshold is there for this)."""
    import subprocess
    import sys

    code = ("import time, numpy as np; from napari_xaimed.evaluation.nearest import "
            "nearest_labels; t = time.perf_counter(); nearest_labels(np.ones((2, 2, 2), "
            "np.uint16), (1, 1, 1), kernel=True); print(time.perf_counter() - t)")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # compiles
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return float(out.stdout.split()[-1])


def case_regions(ref, size, rows, scaling: dict):
    from napari_xaimed.evaluation.instances import class_instances
    from napari_xaimed.evaluation.nearest import nearest_labels
    from napari_xaimed.evaluation.voronoi import voronoi_regions

    ref_map, _ = class_instances(ref, None, instance_input=False, connectivity=26)
    voronoi_regions(ref_map, (1.0, 1.0, 1.0))  # loads the kernel when this size takes it
    t_ours, t_scipy = alternate(lambda: voronoi_regions(ref_map, (1.0, 1.0, 1.0)),
                                lambda: scipy_regions(ref_map), 3)
    # the compiled kernel at every size (ours takes it from 256^3 on, whatever ran before)
    t_kernel, t_scipy_k = alternate(  # (the warm-up loads the kernel)
        lambda: nearest_labels(ref_map, (1.0, 1.0, 1.0), kernel=True),
        lambda: scipy_regions(ref_map), 3, warmup=1)
    same = (np.array_equal(t_ours.result, t_scipy.result)
            and np.array_equal(t_kernel.result, t_scipy.result))
    scaling[size] = (t_ours, t_scipy, t_kernel)
    print(f"  regions: ours {t_ours}, scipy EDT {t_scipy} ({same_text(same)} regions);\n"
          f"           compiled kernel {t_kernel}, scipy EDT {t_scipy_k}")
    rows.append(Row(f"regions {size}^3", t_ours, t_scipy, "ratio", None))
    rows.append(Row(f"regions kernel {size}^3", t_kernel, t_scipy_k, "ratio", None))


def print_scaling(scaling: dict) -> None:
    """The 256^3 / 128^3 time ratio of the regions, ours and scipy's (8x: linear)."""
    if 128 not in scaling or 256 not in scaling:
        return
    (ours_128, scipy_128, kernel_128), (ours_256, scipy_256, kernel_256) = (scaling[128],
                                                                            scaling[256])
    print(f"\nVoronoi regions, 256^3 / 128^3 time (8x the voxels): ours "
          f"{ratio(ours_256, ours_128).text(1)} (scipy laid out anew at 128^3, the kernel at "
          f"256^3), compiled kernel {ratio(kernel_256, kernel_128).text(1)}, scipy EDT "
          f"{ratio(scipy_256, scipy_128).text(1)}"
          f"\n(best over best, range over every pair of runs); a fresh process loads the "
          f"compiled kernel once in {kernel_load_seconds():.2f} s (256^3 and up).")


def run_size(size: int, n: int, seed: int, panoptica_repeats: int, cases: list[str],
             rows: list, panoptica_voronoi: bool = True, scaling: dict | None = None) -> None:
    t0 = time.perf_counter()
    ref, pred = make_inputs(size, n, seed)
    print(f"\n{size}^3, {n} reference instances (inputs made in {time.perf_counter() - t0:.1f} s)")
    if "plain" in cases:
        case_plain(ref, pred, size, panoptica_repeats, rows)
    if "autc" in cases:
        case_autc(ref, pred, size, panoptica_repeats, rows)
    if "voronoi" in cases:
        case_voronoi(ref, pred, size, panoptica_repeats, rows, panoptica_voronoi)
    if "parts" in cases and size == 128:
        case_parts(size, n, seed, panoptica_repeats, rows)
    if "instance" in cases:
        case_instance(size, n, seed, rows)
    if "regions" in cases:
        case_regions(ref, size, rows, {} if scaling is None else scaling)
    if "defaults" in cases:
        case_defaults(ref, pred, size, n, seed, rows)


def print_table(rows: list[Row]) -> None:
    head = (f"{'case':<29}{'ours':>11}{'ours median, range':>26}{'peer':>20}{'ratio':>9}"
            f"{'ratio range':>16}{'target':>11}  met")
    print("\n" + head + "\n" + "-" * len(head))
    for row in rows:
        spread, between = "", ""
        if row.kind == "memory":
            multiple = row.ours / row.theirs
            cells = (f"{row.ours / 2**20:.1f} MB", f"inputs {row.theirs / 2**20:.1f} MB",
                     f"{multiple:.2f}x", f"<= {row.target:g}x",
                     "yes" if multiple <= row.target else "NO")
        else:
            ours = row.ours
            if len(ours.seconds) > 1:
                spread = ours.spread(3, median=True)
            theirs = row.skipped if row.theirs is None else f"{row.theirs.best:.3f} s"
            faster = None if row.theirs is None else ratio(row.theirs, ours)
            shown = "-" if faster is None else f"{faster.value:.1f}x"
            if faster is not None and len(faster.pairs) > 1:
                between = faster.spread(1, unit="x")
            if row.kind == "ratio" and row.target is None:
                target, met = "-", None
            elif row.kind == "ratio":
                target = f">= {row.target:g}x"
                met = faster is not None and faster.value >= row.target
            elif row.target is None:
                target, met = "-", None
            else:
                target, met = f"< {row.target:g} s", ours.best < row.target
            cells = (f"{ours.best:.3f} s", theirs, shown, target,
                     "-" if met is None else "yes" if met else "NO")
        print(f"{row.name:<29}{cells[0]:>11}{spread:>26}{cells[1]:>20}{cells[2]:>9}"
              f"{between:>16}{cells[3]:>11}  {cells[4]}")
    print("\n".join([
        "ratio = peer s / ours s of the best runs (best of 3 ours; Panoptica best of 3 at "
        "128^3, 1 at 256^3);",
        "ratio range: over the pairs of runs; peer: Panoptica, for the regions rows scipy's "
        "EDT.",
        "Memory: tracemalloc peak of one plain evaluation of ours / bytes of the two uint8 "
        "input masks.",
        "autc: ours matches from one overlap table per threshold (no distances); Panoptica "
        "re-runs",
        "matching and instance evaluation (Dice, IoU) per threshold after one "
        "connected-components pass.",
        "inst: instance maps (ids 1..3000); cold = first call in a fresh process, best of 3 "
        "processes,",
        "import not included (printed above); counts = TP/FP/FN/PQ/Dice/IoU, hd95 = also HD95 "
        "and ASSD;",
        "inst and default rows: best of 3 on both sides at every size, run back to back;",
        "default rows: both sides on their defaults (ours all distance metrics but clDice, "
        "Panoptica DSC/IOU/ASSD/RVD).",
        "voronoi: ours = plain matching (HD95/ASSD per TP) + regions with Dice/IoU/HD95/ASSD; "
        "target on",
        "ours at 256^3 only. plain: ratio target at 256^3 only.",
        "parts: target on ours at 128^3; Panoptica's definitions differ.",
    ]))
    if any(row.skipped for row in rows):
        print("skipped (too slow): Panoptica's Voronoi at 256^3 took "
              f"~{PANOPTICA_VORONOI_256_S:.0f} s in the field notes (not measured in this "
              "run;\nleave out --skip-panoptica-voronoi-256 to measure it).")


def parse_cases(text: str) -> list[str]:
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown or not cases:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {unknown}: choose a comma list among {','.join(CASES)}")
    return cases


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 128^3 case")
    parser.add_argument("--cases", type=parse_cases, default=list(CASES),
                        help=f"comma list among {','.join(CASES)} (default: all)")
    parser.add_argument("--skip-panoptica-voronoi-256", action="store_true",
                        help="do not time Panoptica's Voronoi at 256^3 (about 3 minutes)")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    print(f"panoptica {version('panoptica')}, numpy {np.__version__}; cases: "
          f"{','.join(args.cases)}")
    rows: list[Row] = []
    scaling: dict = {}
    run_size(128, 50, seed=1, panoptica_repeats=3, cases=args.cases, rows=rows,
             scaling=scaling)
    if not args.quick and set(args.cases) - {"parts", "vscale"}:
        run_size(256, 300, seed=2, panoptica_repeats=1, cases=args.cases, rows=rows,
                 panoptica_voronoi=not args.skip_panoptica_voronoi_256, scaling=scaling)
    if "vscale" in args.cases:
        case_vscale(rows)
    print_table(rows)
    print_scaling(scaling)


if __name__ == "__main__":
    main()
