"""Cohort mode: evaluate or explain many cases on Dask, resumable, with cohort statistics.

:func:`read_cases` reads the case list (CSV), a job says what to do per case
(:class:`EvaluationJob`, :class:`AttributionJob`, :class:`EmbeddingJob`), and
:func:`run_cohort` runs it on a ``dask.distributed`` cluster (a local one by default), writing
per-case records, the per-case table (CSV and Parquet), and the summary with bootstrap
confidence intervals (and, for embeddings, the latent space's tables).
"""

from napari_xaimed.cohort.embedding import EmbeddingJob, load_embeddings
from napari_xaimed.cohort.jobs import AttributionJob, CaseOutcome, EvaluationJob
from napari_xaimed.cohort.runner import (
    CohortResult,
    cohort_client,
    load_result,
    run_cohort,
    run_cohort_steps,
    tls_security,
)
from napari_xaimed.cohort.summary import (
    attribution_ranking,
    attribution_summary,
    bootstrap_mean_ci,
    describe,
    embedding_summary,
    evaluation_summary,
)
from napari_xaimed.io.cases import Case, case_metadata, read_cases

__all__ = [
    "AttributionJob",
    "Case",
    "CaseOutcome",
    "CohortResult",
    "EmbeddingJob",
    "EvaluationJob",
    "attribution_ranking",
    "attribution_summary",
    "bootstrap_mean_ci",
    "case_metadata",
    "cohort_client",
    "describe",
    "embedding_summary",
    "evaluation_summary",
    "load_embeddings",
    "load_result",
    "read_cases",
    "run_cohort",
    "run_cohort_steps",
    "tls_security",
]
