"""Cohort mode: evaluate or explain many cases on Dask, resumable, with cohort statistics.

:func:`read_cases` reads the case list (CSV), a job says what to do per case
(:class:`EvaluationJob`, :class:`AttributionJob`), and :func:`run_cohort` runs it on a
``dask.distributed`` cluster (a local one by default), writing per-case records, the per-case
table (CSV and Parquet), and the summary with bootstrap confidence intervals.
"""

from napari_xaimed.cohort.cases import Case, read_cases
from napari_xaimed.cohort.jobs import AttributionJob, CaseOutcome, EvaluationJob
from napari_xaimed.cohort.runner import (
    CohortResult,
    cohort_client,
    load_result,
    run_cohort,
    run_cohort_steps,
)
from napari_xaimed.cohort.summary import (
    attribution_ranking,
    attribution_summary,
    bootstrap_mean_ci,
    describe,
    evaluation_summary,
)

__all__ = [
    "AttributionJob",
    "Case",
    "CaseOutcome",
    "CohortResult",
    "EvaluationJob",
    "attribution_ranking",
    "attribution_summary",
    "bootstrap_mean_ci",
    "cohort_client",
    "describe",
    "evaluation_summary",
    "load_result",
    "read_cases",
    "run_cohort",
    "run_cohort_steps",
]
