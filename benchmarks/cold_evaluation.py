"""One first evaluation in a fresh process: the "cold" rows of ``bench_evaluation.py``.

``python benchmarks/cold_evaluation.py ours|panoptica REFERENCE.npy PREDICTION.npy METRIC,...``
loads the two instance maps, then times the package's import and, apart from it, the first
one-to-one greedy evaluation at IoU >= 0.5 on instance input, and prints one JSON line: the two
times, TP/FP/FN, PQ and (with HD95/ASSD among the metrics) the per-TP HD95 and ASSD in
increasing reference id. METRIC names are ours (``hd95,assd``; ``-`` for none); Panoptica gets
DSC and IoU plus the same ones.

Nothing but numpy is imported before the clock starts, so neither package finds the other's
imports (scipy, ...) already loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import time

import numpy as np

PANOPTICA_NAMES = {"hd95": "HD95", "assd": "ASSD"}


def summary(result, metrics: tuple[str, ...], ours: bool) -> dict:
    """Counts, PQ and the per-TP lists of the wanted distance metrics, as JSON values, from our
    ClassResult or Panoptica's result."""
    out = {"tp": int(result.tp), "fp": int(result.fp), "fn": int(result.fn),
           "pq": float(result.pq)}
    if ours:
        rows = sorted((r for r in result.rows if r.accepted), key=lambda r: r.reference_ids)
        for m in metrics:
            out[m] = [float(getattr(r, m)) for r in rows]
    else:
        from panoptica import Metric, MetricMode

        for m in metrics:
            values = result.get_list_metric(getattr(Metric, PANOPTICA_NAMES[m]), MetricMode.ALL)
            out[m] = [float(v) for v in values]
    return out


def ours(reference: np.ndarray, prediction: np.ndarray, metrics: tuple[str, ...]):
    from napari_xaimed.evaluation import evaluate

    return evaluate(reference, prediction, instance_input=True, matching="one_to_one",
                    assignment="greedy", threshold=0.5, match_metric="iou",
                    metrics=metrics)["all"]


def panoptica_evaluator(metrics: tuple[str, ...]):
    """Panoptica on unmatched instance maps (the ids are the instances), NaiveThresholdMatching
    and decision at IoU >= 0.5, instance metrics DSC, IoU and the wanted ones."""
    from panoptica import InputType, Metric, NaiveThresholdMatching, Panoptica_Evaluator

    names = ["DSC", "IOU"] + [PANOPTICA_NAMES[m] for m in metrics]
    return Panoptica_Evaluator(
        expected_input=InputType.UNMATCHED_INSTANCE,
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        instance_metrics=[getattr(Metric, m) for m in names],
        decision_metric=Metric.IOU,
        decision_threshold=0.5,
    )


def panoptica(reference: np.ndarray, prediction: np.ndarray, metrics: tuple[str, ...]):
    evaluator = panoptica_evaluator(metrics)
    with contextlib.redirect_stdout(io.StringIO()):  # its citation banner
        return evaluator.evaluate(prediction, reference)["ungrouped"]


def main(argv: list[str]) -> None:
    who, ref_path, pred_path, names = argv
    metrics = () if names == "-" else tuple(names.split(","))
    reference, prediction = np.load(ref_path), np.load(pred_path)
    t0 = time.perf_counter()
    importlib.import_module("napari_xaimed.evaluation" if who == "ours" else "panoptica")
    t1 = time.perf_counter()
    result = (ours if who == "ours" else panoptica)(reference, prediction, metrics)
    t2 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "first": t2 - t1,
                      **summary(result, metrics, who == "ours")}))


if __name__ == "__main__":
    main(sys.argv[1:])
