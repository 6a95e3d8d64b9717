"""Panoptic evaluation of a prediction against a reference segmentation.

``evaluate`` matches instances (one-to-one, many-to-one or one-to-many at an IoU/Dice threshold)
and reports per class TP/FP/FN, PQ/SQ/RQ and per-instance Dice, IoU, RVD, HD, HD95, ASSD and NSD
in millimetres (clDice on request, for tubular structures); ``autc`` the area under the PQ/SQ/RQ
threshold curves; ``evaluate_lazy`` the same for label maps larger than memory, slab by slab.
"""

from napari_xaimed.evaluation.autc import AUTCResult, autc
from napari_xaimed.evaluation.errors import ERROR_CODES, evaluation_map
from napari_xaimed.evaluation.lazy import evaluate_lazy
from napari_xaimed.evaluation.matching import MATCHINGS
from napari_xaimed.evaluation.panoptic import (
    DEFAULT_METRICS,
    DISTANCE_METRICS,
    ClassResult,
    InstanceRow,
    PanopticResult,
    evaluate,
    evaluate_steps,
)

__all__ = [
    "AUTCResult",
    "ClassResult",
    "DEFAULT_METRICS",
    "DISTANCE_METRICS",
    "ERROR_CODES",
    "InstanceRow",
    "MATCHINGS",
    "PanopticResult",
    "autc",
    "evaluate",
    "evaluate_lazy",
    "evaluate_steps",
    "evaluation_map",
]
