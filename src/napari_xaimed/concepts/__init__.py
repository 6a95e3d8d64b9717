"""Concepts: TCAV and regression concept vectors (RCV) on a model's activations, and the radiomics
features that serve as concepts.
"""

from napari_xaimed.concepts.directional import TCAVResult, tcav
from napari_xaimed.concepts.from_cases import CaseConcepts, concepts_from_cases
from napari_xaimed.concepts.radiomics import (
    case_features,
    region_features,
)
from napari_xaimed.concepts.rcv import RCVResult, regression_concepts

__all__ = [
    "CaseConcepts",
    "RCVResult",
    "TCAVResult",
    "case_features",
    "concepts_from_cases",
    "region_features",
    "regression_concepts",
    "tcav",
]
