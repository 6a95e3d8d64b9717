"""Cases and latent space: embeddings of a model's activations, projections, similar cases and
confounder scores.
"""

from napari_xaimed.latent.embedding import (
    CaseEmbedding,
    Embeddings,
    assemble,
    case_embedding,
    confounder_scores,
    embed,
    project,
    similar_cases,
)

__all__ = [
    "CaseEmbedding",
    "Embeddings",
    "assemble",
    "case_embedding",
    "confounder_scores",
    "embed",
    "project",
    "similar_cases",
]
