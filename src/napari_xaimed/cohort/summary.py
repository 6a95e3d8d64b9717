"""Cohort statistics: means, medians and bootstrap confidence intervals, and method rankings.

Per-case metrics (PQ, SQ, RQ per class and part) are bootstrapped over cases. Per-instance
metrics (Dice, HD95, ...) are pooled over every matched instance of the cohort, but instances of
one case are not independent, so their interval comes from a *cluster* bootstrap: whole cases are
resampled and the statistic is the mean over the instances of the drawn cases. Intervals are the
percentile bootstrap of the mean, seeded, so a summary is reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

SUMMARY_COLUMNS = ["group", "metric", "level", "n", "n_cases", "mean", "median", "ci_low",
                   "ci_high"]
# Per-case columns of an evaluation row that are counts or settings, not quality metrics.
_NOT_METRICS = {"tp", "fp", "fn", "n_reference", "n_prediction", "seconds"}
INSTANCE_METRICS = ("dice", "iou", "rvd", "hd", "hd95", "hd95_directed", "assd", "nsd", "cldice",
                    "part_aware_score")


def bootstrap_mean_ci(values: Any, clusters: Any = None, *, level: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean.

    Parameters
    ----------
    values : array_like
        Observations; NaNs are left out.
    clusters : array_like, optional
        A cluster (case) label per value: cases are resampled whole and the statistic is the
        mean of the values of the drawn cases. None: each value is its own cluster.
    level : float
        Coverage of the interval.
    resamples : int
    seed : int

    Returns
    -------
    (low, high) : tuple of float
        NaN when fewer than two clusters hold a value.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if not 0.0 < level < 1.0:
        raise XaimedError(f"level must lie in (0, 1), got {level}.")
    keep = ~np.isnan(values)
    if clusters is None:
        sums, counts = values[keep], np.ones(int(keep.sum()))
    else:
        clusters = np.asarray(clusters).ravel()
        if clusters.shape != values.shape:
            raise XaimedError("clusters needs one label per value.")
        _, index = np.unique(clusters[keep], return_inverse=True)
        sums = np.bincount(index, weights=values[keep])
        counts = np.bincount(index).astype(np.float64)
    n = len(sums)
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    block = max(1, 2_000_000 // n)  # bound the draw matrix to ~16 MB
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        draw = rng.integers(0, n, size=(stop - start, n))
        stats[start:stop] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def describe(values: Any, clusters: Any = None, *, seed: int = 0,
             resamples: int = 2000) -> dict[str, float]:
    """``n``, ``n_cases``, ``mean``, ``median``, ``ci_low``, ``ci_high`` of ``values``."""
    values = np.asarray(values, dtype=np.float64).ravel()
    keep = ~np.isnan(values)
    n = int(keep.sum())
    n_cases = (len(np.unique(np.asarray(clusters).ravel()[keep])) if clusters is not None
               else n)
    low, high = bootstrap_mean_ci(values, clusters, seed=seed, resamples=resamples)
    return {"n": n, "n_cases": n_cases,
            "mean": float(values[keep].mean()) if n else math.nan,
            "median": float(np.median(values[keep])) if n else math.nan,
            "ci_low": low, "ci_high": high}


def _numeric(frame: Any, exclude: set[str]) -> list[str]:
    import pandas as pd

    return [c for c in frame.columns if c not in exclude
            and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            and frame[c].notna().any()]


def evaluation_summary(cases: Any, instances: Any, *, seed: int = 0,
                       resamples: int = 2000):
    """The cohort summary of an evaluation run.

    Parameters
    ----------
    cases : pandas.DataFrame
        The per-case table (one row per case and class; failed cases have no class).
    instances : pandas.DataFrame
        The per-instance table (``case_id``, ``class_name``, ``accepted`` and the metrics).

    Returns
    -------
    pandas.DataFrame
        One row per class and metric: ``level`` ``"case"`` (PQ/SQ/RQ, part PQ/SQ, mean
        distances per case) or ``"instance"`` (matched instances pooled, cluster bootstrap).
    """
    import pandas as pd

    rows = []
    ok = cases[cases["status"] == "ok"] if len(cases) else cases
    for name, group in (ok.groupby("class", sort=False) if len(ok) else []):
        for metric in _numeric(group, _NOT_METRICS | {"case_id", "class"}):
            if metric.startswith("mean_"):
                continue  # the instance level below says it better, without a mean of means
            rows.append({"group": name, "metric": metric, "level": "case",
                         **describe(group[metric], seed=seed, resamples=resamples)})
    if len(instances):
        accepted = instances[instances["accepted"].astype(bool)]
        for name, group in accepted.groupby("class_name", sort=False):
            metrics = [m for m in (*INSTANCE_METRICS,
                                   *sorted(c for c in group.columns if c.startswith("part_")
                                           and c != "part_aware_score"))
                       if m in group.columns and group[m].notna().any()]
            for metric in metrics:
                rows.append({"group": name, "metric": metric, "level": "instance",
                             **describe(group[metric], group["case_id"], seed=seed,
                                        resamples=resamples)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def attribution_summary(cases: Any, *, seed: int = 0, resamples: int = 2000):
    """Per method and metric across the cohort (one value per case)."""
    import pandas as pd

    rows = []
    ok = cases[cases["status"] == "ok"] if len(cases) else cases
    for method, group in (ok.groupby("method", sort=False) if len(ok) else []):
        for metric in _numeric(group, {"target", "seconds"}):
            rows.append({"group": method, "metric": metric, "level": "case",
                         **describe(group[metric], seed=seed, resamples=resamples)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def attribution_ranking(cases: Any, metrics: list[str], *, seed: int = 0,
                        resamples: int = 2000):
    """Rank the methods within each case on every truth metric, then across the cohort.

    Within a case each metric ranks the methods (1 = best, ties share,
    :func:`napari_xaimed.attribution.rank_methods`); the case's rank of a method is its mean over
    the metrics. The cohort ranking is the mean of those per-case ranks with a bootstrap interval
    over cases, and how many cases each method won.

    Returns
    -------
    pandas.DataFrame or None
        One row per method, best first; None when fewer than two methods or no metric.
    """
    import pandas as pd

    from napari_xaimed.attribution import rank_methods

    ok = cases[cases["status"] == "ok"] if len(cases) else cases
    metrics = [m for m in metrics if m in ok.columns]
    if not len(ok) or not metrics:
        return None
    methods = list(dict.fromkeys(ok["method"]))
    if len(methods) < 2:
        return None
    settings = [{"metric": m} for m in metrics]
    per_case, wins = [], dict.fromkeys(methods, 0.0)
    for _, group in ok.groupby("case_id", sort=False):
        table = group.set_index("method").reindex(methods)[metrics].to_numpy(np.float64).T
        ranking = rank_methods(table, methods, settings)
        per_case.append(ranking.mean_rank)
        best = np.flatnonzero(ranking.mean_rank == ranking.mean_rank.min())
        for i in best:
            wins[methods[i]] += 1.0 / len(best)
    ranks = np.asarray(per_case)
    rows = []
    for j, method in enumerate(methods):
        stats = describe(ranks[:, j], seed=seed, resamples=resamples)
        rows.append({"method": method, "mean_rank": stats["mean"], "ci_low": stats["ci_low"],
                     "ci_high": stats["ci_high"], "cases_won": wins[method],
                     "n_cases": stats["n"]})
    return pd.DataFrame(rows).sort_values("mean_rank", kind="stable").reset_index(drop=True)


def embedding_summary(cases: Any, *, seed: int = 0, resamples: int = 2000):
    """Per layer, the class scores across the cohort (one value per case)."""
    import pandas as pd

    rows = []
    ok = cases[cases["status"] == "ok"] if len(cases) else cases
    for layer, group in (ok.groupby("layer", sort=False) if len(ok) else []):
        for metric in [c for c in group.columns if str(c).startswith("score_")]:
            rows.append({"group": layer, "metric": metric, "level": "case",
                         **describe(group[metric], seed=seed, resamples=resamples)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
