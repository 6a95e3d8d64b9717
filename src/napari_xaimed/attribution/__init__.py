"""Attribution of a PyTorch model's decision on a 3D volume with Captum (and our batched
occlusion), mapped back onto the volume's grid.

:func:`load_model` reads a module, TorchScript, a state dict with a config, a MONAI bundle or
the bundled lesion classifier, and runs code a file names only with ``trust=True``
(:func:`register_network` lets configs name a script's own network); :func:`attribute`
explains one decision with one of :data:`METHODS`. Transformers are also explained from
their attention (:func:`attention_map`: raw attention, attention rollout, gradient-weighted
attention; also reached through :func:`attribute`). :func:`explain_change` explains how the
evidence changed from a prior to a current scan (registration, carried heatmap,
feature-level alignment).
"""

import importlib
from typing import Any

from napari_xaimed.attribution.attention import (
    ATTENTION_METHODS,
    attention_map,
    attention_map_steps,
)
from napari_xaimed.attribution.lazy import attribute_lazy
from napari_xaimed.attribution.methods import METHODS
from napari_xaimed.attribution.run import Attribution, attribute, attribute_steps
from napari_xaimed.models import BUNDLED, LoadedModel, Preprocessing, load_model, register_network

# The explanation-quality, concept, latent-space and longitudinal names that this package
# exported before they got packages of their own (issue 28). They load on first use: those
# packages import attribution.run, so importing them here would make a circle.
_MOVED = {
    "Agreement": "napari_xaimed.explanations",
    "CaseConcepts": "napari_xaimed.concepts",
    "CaseEmbedding": "napari_xaimed.latent",
    "Curve": "napari_xaimed.explanations",
    "Embeddings": "napari_xaimed.latent",
    "EnsembleAttribution": "napari_xaimed.explanations",
    "LongitudinalResult": "napari_xaimed.longitudinal",
    "MapConsistency": "napari_xaimed.explanations",
    "RCVResult": "napari_xaimed.concepts",
    "RandomisationResult": "napari_xaimed.explanations",
    "RankingResult": "napari_xaimed.explanations",
    "TCAVResult": "napari_xaimed.concepts",
    "assemble": "napari_xaimed.latent",
    "auroc": "napari_xaimed.explanations",
    "case_embedding": "napari_xaimed.latent",
    "case_features": "napari_xaimed.concepts",
    "compare_methods": "napari_xaimed.explanations",
    "compare_methods_steps": "napari_xaimed.explanations",
    "concepts_from_cases": "napari_xaimed.concepts",
    "confounder_scores": "napari_xaimed.latent",
    "deletion_curve": "napari_xaimed.explanations",
    "embed": "napari_xaimed.latent",
    "ensemble_attribute": "napari_xaimed.explanations",
    "ensemble_attribute_steps": "napari_xaimed.explanations",
    "explain_change": "napari_xaimed.longitudinal",
    "insertion_curve": "napari_xaimed.explanations",
    "map_consistency": "napari_xaimed.explanations",
    "perturbation_curve_steps": "napari_xaimed.explanations",
    "pointing_game": "napari_xaimed.explanations",
    "project": "napari_xaimed.latent",
    "randomisation_test": "napari_xaimed.explanations",
    "randomisation_test_steps": "napari_xaimed.explanations",
    "rank_methods": "napari_xaimed.explanations",
    "reference_agreement": "napari_xaimed.explanations",
    "region_features": "napari_xaimed.concepts",
    "regression_concepts": "napari_xaimed.concepts",
    "relevance_by_region": "napari_xaimed.explanations",
    "relevance_by_structure": "napari_xaimed.explanations",
    "relevance_by_structure_region": "napari_xaimed.explanations",
    "relevance_mass_accuracy": "napari_xaimed.explanations",
    "relevance_rank_accuracy": "napari_xaimed.explanations",
    "reliable_relevance": "napari_xaimed.explanations",
    "similar_cases": "napari_xaimed.latent",
    "tcav": "napari_xaimed.concepts",
    "top_k_precision": "napari_xaimed.explanations",
    "truth_scores": "napari_xaimed.explanations",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        value = getattr(importlib.import_module(_MOVED[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))


__all__ = [
    "ATTENTION_METHODS",
    "BUNDLED",
    "METHODS",
    "Agreement",
    "Attribution",
    "CaseConcepts",
    "CaseEmbedding",
    "Curve",
    "Embeddings",
    "EnsembleAttribution",
    "LoadedModel",
    "LongitudinalResult",
    "MapConsistency",
    "Preprocessing",
    "RCVResult",
    "RandomisationResult",
    "RankingResult",
    "TCAVResult",
    "attention_map",
    "attention_map_steps",
    "attribute",
    "attribute_lazy",
    "attribute_steps",
    "assemble",
    "auroc",
    "case_embedding",
    "case_features",
    "compare_methods",
    "compare_methods_steps",
    "concepts_from_cases",
    "confounder_scores",
    "deletion_curve",
    "embed",
    "ensemble_attribute",
    "ensemble_attribute_steps",
    "explain_change",
    "insertion_curve",
    "load_model",
    "map_consistency",
    "perturbation_curve_steps",
    "pointing_game",
    "project",
    "randomisation_test",
    "randomisation_test_steps",
    "rank_methods",
    "reference_agreement",
    "region_features",
    "register_network",
    "regression_concepts",
    "relevance_by_region",
    "relevance_by_structure",
    "relevance_by_structure_region",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "reliable_relevance",
    "similar_cases",
    "tcav",
    "top_k_precision",
    "truth_scores",
]
