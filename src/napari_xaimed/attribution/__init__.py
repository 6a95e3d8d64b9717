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

from napari_xaimed.attribution.attention import (
    ATTENTION_METHODS,
    attention_map,
    attention_map_steps,
)
from napari_xaimed.attribution.lazy import attribute_lazy
from napari_xaimed.attribution.methods import METHODS
from napari_xaimed.attribution.run import Attribution, attribute, attribute_steps
from napari_xaimed.concepts import (
    CaseConcepts,
    RCVResult,
    TCAVResult,
    case_features,
    concepts_from_cases,
    region_features,
    regression_concepts,
    tcav,
)
from napari_xaimed.explanations import (
    Agreement,
    Curve,
    EnsembleAttribution,
    MapConsistency,
    RandomisationResult,
    RankingResult,
    auroc,
    compare_methods,
    compare_methods_steps,
    deletion_curve,
    ensemble_attribute,
    ensemble_attribute_steps,
    insertion_curve,
    map_consistency,
    perturbation_curve_steps,
    pointing_game,
    randomisation_test,
    randomisation_test_steps,
    rank_methods,
    reference_agreement,
    relevance_by_region,
    relevance_by_structure,
    relevance_by_structure_region,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    reliable_relevance,
    top_k_precision,
    truth_scores,
)
from napari_xaimed.latent import (
    CaseEmbedding,
    Embeddings,
    assemble,
    case_embedding,
    confounder_scores,
    embed,
    project,
    similar_cases,
)
from napari_xaimed.longitudinal import LongitudinalResult, explain_change
from napari_xaimed.models import BUNDLED, LoadedModel, Preprocessing, load_model, register_network

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
