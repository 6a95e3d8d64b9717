"""Concepts: TCAV and regression concept vectors (RCV) on a model's activations, and the radiomics
features that serve as concepts.
"""

from napari_xaimed.concepts.radiomics import (
    case_features,
    region_features,
)
from napari_xaimed.concepts.tcav import (
    CaseConcepts,
    RCVResult,
    TCAVResult,
    concepts_from_cases,
    regression_concepts,
    tcav,
)

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
