"""Benchmark: our panoptic evaluation and AUTC against Panoptica on the same inputs.

Run ``python benchmarks/bench_evaluation.py`` (128^3 and 256^3) or with ``--quick`` (128^3 only).

Inputs (seeded): reference = non-overlapping balls, radius 4-8 voxels (128^3: 50, 256^3: 300);
prediction = each ball shifted by up to 1.5 voxels per axis (radius jittered), 10% missed, 5%
split in two by a 2-voxel slab, 10% extra false-positive balls. Both are passed as binary uint8
masks (semantic input): instances are 26-connected components on both sides.

Cases
-----
plain : one-to-one greedy matching at IoU >= 0.5 with per-instance Dice, IoU, ASSD and HD95.
        Ours: ``evaluate(..., metrics=("hd95", "assd"))`` (Dice and IoU always come).
        Panoptica: SEMANTIC + ConnectedComponentsInstanceApproximator, NaiveThresholdMatching,
        instance_metrics [DSC, IOU, ASSD, HD95], decision IoU >= 0.5 (its default global DSC
        is left on).
autc  : PQ/SQ/RQ curves over thresholds 0.1, 0.2, ..., 1.0 and their areas.
        Ours: ``autc(..., thresholds=0.1..1.0)``: components and overlap table once, then
        only the matching per threshold; no distance metrics.
        Panoptica: ``evaluate_autc(threshold_step_size=0.1)``: components once, then the full
        matching + instance evaluation per threshold, with instance_metrics [DSC, IOU] only
        (the least it needs for SQ/PQ; the distance metrics would cost it 10x more).

Timings are the best of N runs (ours N=3; Panoptica N=3 at 128^3, N=1 at 256^3). Our peak
memory is measured with tracemalloc (numpy allocations are traced) over a separate plain run,
as a multiple of the two input volumes' bytes (2 x uint8 masks).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import tracemalloc

import numpy as np

from napari_xaimed.evaluation import autc, evaluate

THRESHOLDS = np.arange(1, 11) / 10  # 0.1 ... 1.0, the same floats as Panoptica's grid
TARGETS = {"plain": 10.0, "autc": 20.0, "memory": 3.0}


def paint_ball(volume, centre, radius, value, keep=None):
    """Set the voxels of a ball to ``value`` (only inside ``keep(z, y, x)`` when given)."""
    lo = np.maximum(np.floor(centre - radius).astype(int), 0)
    hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, volume.shape)
    z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    mask = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
    if keep is not None:
        mask &= keep(z, y, x)
    volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][mask] = value


def make_inputs(size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary reference and prediction masks (uint8), see the module docstring."""
    rng = np.random.default_rng(seed)
    shape = (size, size, size)
    centres, radii = [], []
    while len(centres) < n:
        r = rng.uniform(4, 8)
        c = rng.uniform(r + 1, size - r - 2, 3)
        if all(np.linalg.norm(c - c2) > r + r2 + 2 for c2, r2 in zip(centres, radii, strict=True)):
            centres.append(c)
            radii.append(r)
    reference = np.zeros(shape, np.uint8)
    prediction = np.zeros(shape, np.uint8)
    roles = rng.permutation(n)
    n_missed, n_split = round(0.1 * n), round(0.05 * n)
    for k, i in enumerate(roles):
        c, r = centres[i], radii[i]
        paint_ball(reference, c, r, 1)
        if k < n_missed:
            continue
        c_pred, r_pred = c + rng.uniform(-1.5, 1.5, 3), r + rng.uniform(-0.5, 0.5)
        if k < n_missed + n_split:
            axis = int(rng.integers(3))
            cut = c_pred[axis] + rng.uniform(-1.5, 1.5)

            def outside_slab(z, y, x, axis=axis, cut=cut):
                return np.abs((z, y, x)[axis] - cut) >= 1.0

            paint_ball(prediction, c_pred, r_pred, 1, keep=outside_slab)
        else:
            paint_ball(prediction, c_pred, r_pred, 1)
    for _ in range(round(0.1 * n)):
        r = rng.uniform(3, 6)
        paint_ball(prediction, rng.uniform(r, size - r, 3), r, 1)
    return reference, prediction


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


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


def peak_memory(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_size(size: int, n: int, seed: int, panoptica_repeats: int, rows: list) -> None:
    t0 = time.perf_counter()
    ref, pred = make_inputs(size, n, seed)
    print(f"\n{size}^3, {n} reference instances (inputs made in {time.perf_counter() - t0:.1f} s)")

    t_ours, res = best_of(lambda: ours_plain(ref, pred), 3)
    plain = panoptica_evaluator(["DSC", "IOU", "ASSD", "HD95"])
    t_pan, pan = best_of(quiet(lambda: plain.evaluate(pred, ref)["ungrouped"]),
                         panoptica_repeats)
    same = (res.tp, res.fp, res.fn) == (pan.tp, pan.fp, pan.fn) and abs(res.pq - pan.pq) < 1e-9
    print(f"  plain: ours TP/FP/FN {res.tp}/{res.fp}/{res.fn} PQ {res.pq:.6f}; panoptica "
          f"{pan.tp}/{pan.fp}/{pan.fn} PQ {pan.pq:.6f} ({'same' if same else 'DIFFERENT'})")
    rows.append((f"plain {size}^3", t_ours, t_pan, 3, panoptica_repeats, TARGETS["plain"]))

    t_ours, res = best_of(lambda: ours_autc(ref, pred), 3)
    curve = panoptica_evaluator(["DSC", "IOU"])
    t_pan, pan = best_of(
        quiet(lambda: curve.evaluate_autc(pred, ref, threshold_step_size=0.1)["ungrouped"]),
        panoptica_repeats)
    ours_area = [res.area["all"][m] for m in ("pq", "sq", "rq")]
    their_area = [pan.get_autc(m) for m in ("pq", "sq", "rq")]
    same = np.allclose(ours_area, their_area, rtol=0, atol=1e-9)
    print("  autc:  area PQ/SQ/RQ ours " + "/".join(f"{v:.6f}" for v in ours_area)
          + "; panoptica " + "/".join(f"{v:.6f}" for v in their_area)
          + f" ({'same' if same else 'DIFFERENT'})")
    rows.append((f"autc 10 thr {size}^3", t_ours, t_pan, 3, panoptica_repeats, TARGETS["autc"]))

    peak = peak_memory(lambda: ours_plain(ref, pred))
    rows.append((f"peak mem plain {size}^3", peak, ref.nbytes + pred.nbytes, None, None,
                 TARGETS["memory"]))


def print_table(rows: list) -> None:
    head = f"{'case':<22}{'ours':>11}{'panoptica':>16}{'ratio':>9}{'target':>10}  met"
    print("\n" + head + "\n" + "-" * len(head))
    for name, ours, theirs, n_ours, _, target in rows:
        if n_ours is None:  # memory: ours = peak bytes, theirs = input bytes
            multiple = ours / theirs
            cells = (f"{ours / 2**20:.1f} MB", f"inputs {theirs / 2**20:.1f} MB",
                     f"{multiple:.2f}x", f"<= {target:g}x", multiple <= target)
        else:
            ratio = theirs / ours
            cells = (f"{ours:.3f} s", f"{theirs:.3f} s", f"{ratio:.1f}x", f">= {target:g}x",
                     ratio >= target)
        print(f"{name:<22}{cells[0]:>11}{cells[1]:>16}{cells[2]:>9}{cells[3]:>10}  "
              f"{'yes' if cells[4] else 'NO'}")
    print("ratio = panoptica s / ours s (best of 3 ours; Panoptica best of 3 at 128^3, 1 at "
          "256^3).\nMemory: tracemalloc peak of one plain evaluation of ours / bytes of the "
          "two uint8 input masks.\nautc: ours matches from one overlap table per threshold "
          "(no distances); Panoptica re-runs\nmatching and instance evaluation (Dice, IoU) per "
          "threshold after one connected-components pass.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 128^3 case")
    args = parser.parse_args(argv)
    from importlib.metadata import version

    print(f"panoptica {version('panoptica')}, numpy {np.__version__}")
    rows: list = []
    run_size(128, 50, seed=1, panoptica_repeats=3, rows=rows)
    if not args.quick:
        run_size(256, 300, seed=2, panoptica_repeats=1, rows=rows)
    print_table(rows)


if __name__ == "__main__":
    main()
