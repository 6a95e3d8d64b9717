"""Area under the threshold curve: PQ, SQ and RQ as functions of the matching threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.evaluation.footprints import scan
from napari_xaimed.evaluation.instances import label_values
from napari_xaimed.evaluation.label_modes import label_plan
from napari_xaimed.evaluation.panoptic import check_pair, class_maps
from napari_xaimed.evaluation.per_class import match_table

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # noqa: NPY201 (numpy < 2)


@dataclass
class AUTCResult:
    """Curves over ``thresholds`` and their areas, per class.

    ``curves[class][metric]`` is an array aligned with ``thresholds`` (metric in pq, sq, rq);
    ``area[class][metric]`` the area under it over [0, 1].
    """

    thresholds: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]
    area: dict[str, dict[str, float]]
    counts: dict[str, list[tuple[int, int, int]]]
    label_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.tolist(),
                "curves": {c: {m: v.tolist() for m, v in d.items()}
                           for c, d in self.curves.items()},
                "area": self.area, "counts": self.counts, "label_mode": self.label_mode}


def area_under(thresholds: np.ndarray, values: np.ndarray) -> float:
    """Trapezoid area over [0, 1]; NaN counts as 0, and a curve that stops short of 0 or 1 is
    extended flat to the end (nearest value), so the area of a constant curve is its value."""
    x = np.asarray(thresholds, float)
    y = np.nan_to_num(np.asarray(values, float), nan=0.0)
    if x[0] > 0:
        x, y = np.r_[0.0, x], np.r_[y[0], y]
    if x[-1] < 1:
        x, y = np.r_[x, 1.0], np.r_[y, y[-1]]
    return float(_trapezoid(y, x))


def autc(
    reference: np.ndarray,
    prediction: np.ndarray,
    thresholds: Any = None,
    *,
    matching: str = "one_to_one",
    match_metric: str = "iou",
    instance_input: bool = False,
    classes: Any = None,
    label_mode: str | None = None,
    assignment: str = "greedy",
    strict: bool = False,
    connectivity: int = 26,
) -> AUTCResult:
    """PQ, SQ and RQ over matching thresholds, and the area under each curve.

    The instances and their overlap table are computed once; only the matching is redone per
    threshold, from counts, so a fine threshold grid costs little.

    Parameters
    ----------
    reference, prediction : numpy.ndarray
        As for :func:`~napari_xaimed.evaluation.evaluate`.
    thresholds : sequence of float, optional
        Sorted values in [0, 1]; default ``0, 0.1, ..., 1``.
    matching, match_metric, instance_input, classes, label_mode, assignment, strict, connectivity
        As for :func:`~napari_xaimed.evaluation.evaluate` (the same classes: by default a curve
        per label value of a semantic map).

    Returns
    -------
    AUTCResult
        ``label_mode``: the mode that ran, as in ``evaluate``'s ``params``.
    """
    reference, prediction = check_pair(reference, prediction, matching, assignment, match_metric,
                                       signs=not instance_input)
    # rounded so the default grid holds 0.6 itself rather than 0.6000000000000001
    t = (np.round(np.linspace(0.0, 1.0, 11), 12) if thresholds is None
         else np.asarray(thresholds, float))
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] > 1:
        raise XaimedError("thresholds must be at least two increasing values within [0, 1].")
    plan = label_plan(label_mode, classes, instance_input=instance_input,
                      values=lambda: label_values(reference, prediction))
    curves, areas, counts = {}, {}, {}
    for name, values in plan.classes.items():
        ref_map, ref_ids, pred_map, pred_ids, scanned = class_maps(
            reference, prediction, values, instance_input=instance_input,
            connectivity=connectivity, read_ids=instance_input,
            values_apart=plan.values_apart)
        table = (scanned.table if scanned is not None
                 else scan(ref_map, pred_map, len(ref_ids), len(pred_ids))[0])
        scores = table.scores(match_metric)
        pq, sq, rq, cnt = [], [], [], []
        for threshold in t:
            c, _ = match_table(table, threshold=float(threshold), match_metric=match_metric,
                               matching=matching, assignment=assignment, strict=strict,
                               scores=scores)
            pq.append(c.pq)
            sq.append(c.sq)
            rq.append(c.rq)
            cnt.append((c.tp, c.fp, c.fn))
        curves[name] = {"pq": np.array(pq), "sq": np.array(sq), "rq": np.array(rq)}
        areas[name] = {m: area_under(t, v) for m, v in curves[name].items()}
        counts[name] = cnt
    return AUTCResult(thresholds=t, curves=curves, area=areas, counts=counts,
                      label_mode=plan.mode)
