"""What an evaluation returns: one :class:`InstanceRow` per matched or unmatched instance, a
:class:`ClassResult` per class (counts, panoptic quality, distances, parts) and the
:class:`PanopticResult` over all classes, with the metric names they may hold."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_xaimed.evaluation.label_modes import mean_over_classes

MATCH_METRICS = ("iou", "dice")


DISTANCE_METRICS = ("hd", "hd95", "hd95_directed", "assd", "nsd", "cldice")


# What evaluate computes unless told otherwise: every metric but clDice, which only means
# something for tubular structures (vessels, airways, neurons) and whose skeletons cost most of
# a call; ``metrics=(*DEFAULT_METRICS, "cldice")`` opts in.
DEFAULT_METRICS = ("hd", "hd95", "hd95_directed", "assd", "nsd")


@dataclass
class InstanceRow:
    """One matched group: the reference and prediction ids merged into it and their metrics."""

    class_name: str
    reference_ids: tuple[int, ...]
    prediction_ids: tuple[int, ...]
    accepted: bool
    score: float
    dice: float
    iou: float
    rvd: float
    reference_voxels: int
    prediction_voxels: int
    reference_mm3: float
    hd: float = math.nan
    hd95: float = math.nan
    hd95_directed: float = math.nan
    assd: float = math.nan
    nsd: float = math.nan
    cldice: float = math.nan
    center_zyx: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    parts: dict[str, float] = field(default_factory=dict)
    part_aware_score: float = math.nan


@dataclass
class ClassResult:
    """Counts, PQ/SQ/RQ and rows of one evaluated class.

    The unmatched instances are listed by original id (``missed_reference_ids``,
    ``false_positive_ids``), with their voxel counts (``missed_voxels``,
    ``false_positive_voxels``) and centres of mass in voxel coordinates ``(z, y, x)``
    (``missed_centres``, ``false_positive_centres``), keyed by the same ids.

    ``metrics`` are the distance metrics computed for the rows (the others are NaN there and
    left out of :meth:`summary`).

    ``sq`` is the mean matching metric over TPs; ``pq = sq * rq``; ``rq = TP / (TP + FP/2 + FN/2)``.
    Conventions for empty inputs: both empty gives NaN for all three; one empty (or no TP) gives
    0 with the counts right. Distance means (``mean_hd95`` etc.) are NaN when there is no TP.

    With ``keep_maps``: ``error_map`` (codes of :data:`~napari_xaimed.evaluation.errors.
    ERROR_CODES`, prediction side first) and ``missed_map``, every voxel of each missed
    reference (FN) holding its original id, also where a prediction covers it.
    """

    name: str
    tp: int
    fp: int
    fn: int
    pq: float
    sq: float
    rq: float
    n_reference: int
    n_prediction: int
    rows: list[InstanceRow] = field(default_factory=list)
    missed_reference_ids: list[int] = field(default_factory=list)
    false_positive_ids: list[int] = field(default_factory=list)
    missed_voxels: dict[int, int] = field(default_factory=dict)
    missed_centres: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    false_positive_voxels: dict[int, int] = field(default_factory=dict)
    false_positive_centres: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    error_map: np.ndarray | None = field(default=None, repr=False)
    missed_map: np.ndarray | None = field(default=None, repr=False)
    part_sq: dict[str, float] = field(default_factory=dict)
    part_pq: dict[str, float] = field(default_factory=dict)
    part_aware_pq: float = math.nan
    regions: list[dict[str, Any]] = field(default_factory=list)
    region_map: np.ndarray | None = field(default=None, repr=False)
    metrics: tuple[str, ...] = DISTANCE_METRICS

    def mean(self, metric: str) -> float:
        """Mean of a per-instance metric over the accepted (TP) groups; NaN without TPs."""
        values = [getattr(r, metric) for r in self.rows if r.accepted]
        values = [v for v in values if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def summary(self) -> dict[str, Any]:
        out = {"class": self.name, "tp": self.tp, "fp": self.fp, "fn": self.fn, "pq": self.pq,
               "sq": self.sq, "rq": self.rq, "n_reference": self.n_reference,
               "n_prediction": self.n_prediction}
        # the distance metrics computed (``metrics``), not a NaN column for each one left out
        for metric in ("dice", "iou", "rvd", *(m for m in DISTANCE_METRICS if m in self.metrics)):
            out[f"mean_{metric}"] = self.mean(metric)
        if self.part_sq:
            out["part_aware_pq"] = self.part_aware_pq
            for part in self.part_sq:
                out[f"sq_{part}"], out[f"pq_{part}"] = self.part_sq[part], self.part_pq[part]
        if self.regions:
            for metric in ("dice", "iou", "hd95", "assd"):
                values = [r[metric] for r in self.regions if metric in r]
                out[f"region_mean_{metric}"] = float(np.nanmean(values)) if values else math.nan
        return out


@dataclass
class PanopticResult:
    """What :func:`evaluate` returns: one :class:`ClassResult` per evaluated class."""

    classes: dict[str, ClassResult]
    params: dict[str, Any]

    def __getitem__(self, name: str) -> ClassResult:
        return self.classes[name]

    def mean_over_classes(self) -> dict[str, Any] | None:
        """With ``label_mode="per_label"`` (each label value its own class): the summary row
        over the classes (:func:`~napari_xaimed.evaluation.label_modes.mean_over_classes`:
        counts summed, PQ/SQ/RQ and mean metrics averaged over classes); None otherwise."""
        if self.params.get("label_mode") != "per_label" or len(self.classes) < 2:
            return None
        return mean_over_classes([c.summary() for c in self.classes.values()])

    def summary_rows(self) -> list[dict[str, Any]]:
        """One summary row per class, then the mean over classes where there is one."""
        rows = [c.summary() for c in self.classes.values()]
        mean = self.mean_over_classes()
        return rows + ([mean] if mean is not None else [])

    def to_dict(self) -> dict[str, Any]:
        mean = self.mean_over_classes()
        return {
            "params": self.params,
            **({"mean_over_classes": mean} if mean is not None else {}),
            "classes": {
                name: {**c.summary(), "rows": [asdict(r) for r in c.rows],
                       "missed_reference_ids": c.missed_reference_ids,
                       "false_positive_ids": c.false_positive_ids,
                       "missed_voxels": c.missed_voxels,
                       "missed_centres": c.missed_centres,
                       "false_positive_voxels": c.false_positive_voxels,
                       "false_positive_centres": c.false_positive_centres}
                for name, c in self.classes.items()
            },
        }

    def to_dataframe(self):
        """One row per class: counts, PQ/SQ/RQ and mean per-instance metrics; then, with
        ``label_mode="per_label"``, the row ``"mean over classes"``."""
        import pandas as pd

        return pd.DataFrame(self.summary_rows())

    def instances_dataframe(self):
        """One row per matched group over all classes."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for c in self.classes.values() for r in c.rows])
