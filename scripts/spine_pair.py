"""Panoptica's real spine pair: our label modes next to Panoptica 2.1.7.

Run ``python scripts/spine_pair.py [folder]`` with the folder holding ``ref.nii.gz`` and
``pred.nii.gz`` (default ``../shared/data/panoptica-spine/semantic`` from the checkout, the
semantic pair of the Panoptica repository's examples: labels 26, 41-49, 60-62, 100). Needs
``panoptica==2.1.7`` (see FIELD-NOTES on installing it beside napari).

Prints, at IoU >= 0.5, greedy one-to-one, 26-connected components:

- ``panoptica`` mode (components of each label value kept apart, matched across values as one
  class) next to Panoptica's semantic evaluation without class groups;
- ``per_label`` mode (the default: each label value its own class) next to Panoptica with one
  label group per value, class by class, and the mean over classes;
- ``merged`` (every nonzero voxel one foreground), the old default, for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np

from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import read_volume

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "panoptica-spine" / "semantic"


def panoptica(ref: np.ndarray, pred: np.ndarray, spacing, groups=None) -> dict:
    """Panoptica 2.1.7 on a semantic pair (its console banner swallowed)."""
    from panoptica import (
        ConnectedComponentsInstanceApproximator,
        InputType,
        Metric,
        NaiveThresholdMatching,
        Panoptica_Evaluator,
    )
    from panoptica.utils.constants import CCABackend

    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        segmentation_class_groups=groups,
        instance_metrics=[Metric.DSC, Metric.IOU])
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate(pred, ref, voxelspacing=tuple(spacing))


def line(name: str, tp, fp, fn, pq, sq, rq) -> str:
    return f"{name:>18} {tp:>4} {fp:>4} {fn:>4}  {pq:.4f} {sq:.4f} {rq:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT)
    args = parser.parse_args()
    ref = read_volume(args.folder / "ref.nii.gz")
    pred = read_volume(args.folder / "pred.nii.gz")
    spacing = ref.spacing
    reference, prediction = np.asarray(ref.data), np.asarray(pred.data)
    values = sorted(set(np.unique(reference).tolist()) | set(np.unique(prediction).tolist()))
    print(f"{args.folder}: shape {reference.shape}, spacing {tuple(round(s, 4) for s in spacing)}"
          f" mm, labels {[v for v in values if v]}")
    header = f"{'':>18} {'TP':>4} {'FP':>4} {'FN':>4}  {'PQ':>6} {'SQ':>6} {'RQ':>6}"

    print("\npanoptica mode (one class, components of each value, matched across values)")
    print(header)
    start = time.perf_counter()
    ours = evaluate(reference, prediction, spacing=spacing, label_mode="panoptica", metrics=())
    seconds = time.perf_counter() - start
    c = ours["all"]
    print(line("xaimed", c.tp, c.fp, c.fn, c.pq, c.sq, c.rq) + f"   {seconds:.2f} s")
    start = time.perf_counter()
    theirs = panoptica(reference, prediction, spacing)["ungrouped"]
    seconds = time.perf_counter() - start
    print(line("Panoptica 2.1.7", theirs.tp, theirs.fp, theirs.fn, theirs.pq, theirs.sq,
               theirs.rq) + f"   {seconds:.2f} s")

    from panoptica.utils.label_group import LabelGroup
    from panoptica.utils.segmentation_class import SegmentationClassGroups

    print("\nper_label mode (default: each label value its own class) vs Panoptica, one "
          "label group per value")
    print(f"{'':>18} {'xaimed TP FP FN  PQ':>28}   {'Panoptica TP FP FN  PQ':>28}")
    start = time.perf_counter()
    ours = evaluate(reference, prediction, spacing=spacing, metrics=())
    seconds = time.perf_counter() - start
    groups = SegmentationClassGroups({f"label{v}": LabelGroup(int(v)) for v in values if v})
    theirs = panoptica(reference, prediction, spacing, groups)
    same = True
    for name, c in ours.classes.items():
        t = theirs[f"label{name}"]
        equal = (c.tp, c.fp, c.fn) == (t.tp, t.fp, t.fn) and np.isclose(c.pq, t.pq)
        same &= bool(equal)
        print(f"{'label ' + name:>18} {c.tp:>10} {c.fp:>3} {c.fn:>3} {c.pq:.4f}   "
              f"{t.tp:>13} {t.fp:>3} {t.fn:>3} {t.pq:.4f}  {'same' if equal else 'DIFFERENT'}")
    mean = ours.mean_over_classes()
    their_pq = float(np.mean([t.pq for t in theirs.values()]))
    print(f"{'mean over classes':>18} {mean['tp']:>10} {mean['fp']:>3} {mean['fn']:>3} "
          f"{mean['pq']:.4f}   {'':>21}{their_pq:.4f}  (PQ mean of Panoptica's groups)")
    print(f"mode that ran: {ours.params['label_mode']}; all classes equal to Panoptica: {same}"
          f"; {seconds:.2f} s")

    c = evaluate(reference, prediction, spacing=spacing, label_mode="merged", metrics=())["all"]
    print("\nmerged (asked for explicitly; the old silent default)")
    print(header)
    print(line("xaimed merged", c.tp, c.fp, c.fn, c.pq, c.sq, c.rq))


if __name__ == "__main__":
    main()
