"""Explanation quality: scores against a ground truth (in memory and lazy), relevance by region and
by structure, faithfulness curves, the randomisation sanity check, method ranking and ensembles.
"""

from napari_xaimed.explanations.ensembles import (
    EnsembleAttribution,
    MapConsistency,
    ensemble_attribute,
    ensemble_attribute_steps,
    map_consistency,
    reliable_relevance,
)
from napari_xaimed.explanations.faithfulness import (
    Curve,
    deletion_curve,
    insertion_curve,
    perturbation_curve_steps,
)
from napari_xaimed.explanations.ranking import (
    RankingResult,
    compare_methods,
    compare_methods_steps,
    rank_methods,
)
from napari_xaimed.explanations.regions import (
    Agreement,
    reference_agreement,
    relevance_by_region,
)
from napari_xaimed.explanations.sanity import (
    RandomisationResult,
    randomisation_test,
    randomisation_test_steps,
)
from napari_xaimed.explanations.structures import (
    relevance_by_structure,
    relevance_by_structure_region,
)
from napari_xaimed.explanations.truth_metrics import (
    auroc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_precision,
    truth_scores,
)

__all__ = [
    "Agreement",
    "Curve",
    "EnsembleAttribution",
    "MapConsistency",
    "RandomisationResult",
    "RankingResult",
    "auroc",
    "compare_methods",
    "compare_methods_steps",
    "deletion_curve",
    "ensemble_attribute",
    "ensemble_attribute_steps",
    "insertion_curve",
    "map_consistency",
    "perturbation_curve_steps",
    "pointing_game",
    "randomisation_test",
    "randomisation_test_steps",
    "rank_methods",
    "reference_agreement",
    "relevance_by_region",
    "relevance_by_structure",
    "relevance_by_structure_region",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "reliable_relevance",
    "top_k_precision",
    "truth_scores",
]
