"""Which attribution method looks best, and how much that depends on the evaluation's settings.

Explanation metrics have free parameters (the deletion baseline and step count, supervoxel size,
the pointing game's tolerance, k), and picking them can flip which method looks best. So
:func:`compare_methods` scores every method under a grid of such settings, ranks the methods per
setting (1 = best, ties share the mean rank), and reports each method's mean rank and its spread,
the winner of each setting and how often the winner changes. :func:`rank_methods` does the
ranking part on any score table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed.attribution.run import attribute_steps
from napari_xaimed.explanations.faithfulness import perturbation_curve_steps
from napari_xaimed.explanations.truth_metrics import (
    auroc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_precision,
)

# Whether a larger value of each metric means a better explanation.
HIGHER_IS_BETTER = {
    "deletion": False, "insertion": True, "relevance_mass_accuracy": True,
    "relevance_rank_accuracy": True, "auroc": True, "pointing_game": True,
    "top_k_precision": True,
}

DEFAULT_SETTINGS: list[dict[str, Any]] = (
    [{"metric": kind, "baseline": b, "steps": s}
     for kind in ("deletion", "insertion") for b in ("blur", "mean", "zero") for s in (10, 20)]
    + [{"metric": "pointing_game", "tolerance_mm": t} for t in (0.0, 2.0, 5.0)]
    + [{"metric": "top_k_precision", "k": k} for k in (0.001, 0.005, 0.02)]
    + [{"metric": "relevance_mass_accuracy"}, {"metric": "relevance_rank_accuracy"},
       {"metric": "auroc"}]
)


@dataclass
class RankingResult:
    """Methods ranked under each evaluation setting.

    Attributes
    ----------
    methods : list of str
    settings : list of dict
        Each with ``"metric"`` and its parameters.
    scores : numpy.ndarray
        ``(settings, methods)`` metric values.
    ranks : numpy.ndarray
        ``(settings, methods)``: 1 = best in that setting, ties share their mean rank.
    mean_rank, rank_std : numpy.ndarray
        Per method over the settings (population standard deviation).
    winners : list of list of str
        The best method(s) of each setting (several when tied).
    winner_changes : float
        Share of settings whose winner is not the overall most frequent winner (0: one method
        wins everywhere).
    """

    methods: list[str]
    settings: list[dict[str, Any]]
    scores: np.ndarray
    ranks: np.ndarray
    mean_rank: np.ndarray
    rank_std: np.ndarray
    winners: list[list[str]]
    winner_changes: float
    maps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def overall(self) -> list[str]:
        """Methods from the best mean rank to the worst."""
        return [self.methods[i] for i in np.argsort(self.mean_rank, kind="stable")]

    def to_dataframe(self):
        """One row per method: mean rank, spread, and settings won."""
        import pandas as pd

        wins = Counter(w for ws in self.winners for w in ws)
        return pd.DataFrame({
            "method": self.methods, "mean_rank": self.mean_rank, "rank_std": self.rank_std,
            "settings_won": [wins.get(m, 0) for m in self.methods],
        }).sort_values("mean_rank", kind="stable").reset_index(drop=True)

    def settings_dataframe(self):
        """One row per setting: its parameters, each method's score and the winner."""
        import pandas as pd

        rows = []
        for setting, scores, winners in zip(self.settings, self.scores, self.winners,
                                            strict=True):
            label = ", ".join(f"{k}={v}" for k, v in setting.items() if k != "metric")
            rows.append({"metric": setting["metric"], "setting": label,
                         **dict(zip(self.methods, scores, strict=True)),
                         "winner": " / ".join(winners)})
        return pd.DataFrame(rows)


def rank_methods(scores: Any, methods: list[str], settings: list[dict[str, Any]],
                 higher_is_better: list[bool] | None = None) -> RankingResult:
    """Rank methods per setting and aggregate.

    Parameters
    ----------
    scores : array_like
        ``(settings, methods)`` metric values (NaN: the method could not be scored there; it
        ranks last in that setting).
    methods : list of str
    settings : list of dict
        With ``"metric"``; its direction comes from :data:`HIGHER_IS_BETTER` unless
        ``higher_is_better`` gives one per setting.
    higher_is_better : list of bool, optional

    Returns
    -------
    RankingResult
    """
    table = np.asarray(scores, dtype=np.float64)
    if table.shape != (len(settings), len(methods)):
        raise XaimedError(f"scores {table.shape} must be (settings, methods) = "
                          f"({len(settings)}, {len(methods)}).")
    if len(methods) < 2 or not settings:
        raise XaimedError("ranking needs at least two methods and one setting.")
    if higher_is_better is None:
        unknown = {s.get("metric") for s in settings} - set(HIGHER_IS_BETTER)
        if unknown:
            raise XaimedError(f"no known direction for metrics {sorted(map(str, unknown))}: "
                              "pass higher_is_better.")
        higher_is_better = [HIGHER_IS_BETTER[s["metric"]] for s in settings]
    from scipy.stats import rankdata  # scipy.stats takes ~0.7 s to import: only when used

    ranks = np.empty_like(table)
    winners = []
    for row, (values, higher) in enumerate(zip(table, higher_is_better, strict=True)):
        key = -values if higher else values.copy()
        key[np.isnan(key)] = np.inf  # unscored methods rank last
        ranks[row] = rankdata(key, method="average")
        best = ranks[row].min()
        winners.append([m for m, r in zip(methods, ranks[row], strict=True) if r == best])
    counts = Counter(w for ws in winners for w in ws)
    top = max(counts.values())
    favourite = {m for m, c in counts.items() if c == top}
    changes = float(np.mean([not (set(ws) & favourite) for ws in winners]))
    return RankingResult(methods=list(methods), settings=list(settings), scores=table,
                         ranks=ranks, mean_rank=ranks.mean(axis=0), rank_std=ranks.std(axis=0),
                         winners=winners, winner_changes=changes)


def _score(setting: dict[str, Any], heatmap: np.ndarray, mask: np.ndarray | None,
           spacing: Any) -> float:
    metric = setting["metric"]
    if mask is None:
        raise XaimedError(f"{metric} compares with a ground-truth mask: give one.")
    if metric == "pointing_game":
        return float(pointing_game(heatmap, mask, spacing=spacing,
                                   tolerance_mm=float(setting.get("tolerance_mm", 0.0))))
    if metric == "top_k_precision":
        return top_k_precision(heatmap, mask, setting.get("k", 0.01))
    return {"relevance_mass_accuracy": relevance_mass_accuracy,
            "relevance_rank_accuracy": relevance_rank_accuracy,
            "auroc": auroc}[metric](heatmap, mask)


def compare_methods_steps(
    model: Any, volume: np.ndarray, methods: list[str], *, mask: np.ndarray | None = None,
    settings: list[dict[str, Any]] | None = None, target: int | None = None,
    spacing: Any = None, seed: int = 0, device: str = "auto",
    method_params: dict[str, dict[str, Any]] | None = None, **kwargs: Any,
) -> Steps[RankingResult]:
    """Generator form of :func:`compare_methods`."""
    settings = list(DEFAULT_SETTINGS if settings is None else settings)
    if mask is None:
        settings = [s for s in settings if s["metric"] in ("deletion", "insertion")]
    for s in settings:
        if s.get("metric") not in HIGHER_IS_BETTER:
            raise XaimedError(f"unknown metric in setting {s}: choose from "
                              f"{sorted(HIGHER_IS_BETTER)}.")
    if len(methods) < 2:
        raise XaimedError("compare at least two methods.")
    method_params = method_params or {}
    parts = len(methods) * 2
    maps: dict[str, np.ndarray] = {}
    chosen = target
    for i, method in enumerate(methods):
        result = yield from within(
            attribute_steps(model, volume, method, target=chosen, seed=seed, device=device,
                            spacing=spacing, **method_params.get(method, {}), **kwargs),
            i, parts, f"{method}: ")
        chosen = result.target if chosen is None else chosen  # one class for every method
        maps[method] = result.map
    scores = np.full((len(settings), len(methods)), np.nan)
    for j, method in enumerate(methods):
        for i, setting in enumerate(settings):
            yield Progress((len(methods) + j) * 1000 + 1000 * i // len(settings),
                           parts * 1000, f"scoring {method}: {setting['metric']}")
            if setting["metric"] in ("deletion", "insertion"):
                params = {k: v for k, v in setting.items() if k != "metric"}
                curve = yield from within(
                    perturbation_curve_steps(model, volume, maps[method], setting["metric"],
                                             target=chosen, spacing=spacing, device=device,
                                             **params),
                    len(methods) + j, parts, f"scoring {method}: ")
                scores[i, j] = curve.area
            else:
                scores[i, j] = _score(setting, maps[method], mask, spacing)
    result = rank_methods(scores, list(methods), settings)
    result.maps = maps
    return result


def compare_methods(model: Any, volume: np.ndarray, methods: list[str],
                    **kwargs: Any) -> RankingResult:
    """Score several attribution methods under a grid of evaluation settings and rank them.

    Parameters
    ----------
    model : torch.nn.Module, path or "bundled"
        A classifier.
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    methods : list of str
        Names from :data:`~napari_xaimed.attribution.METHODS`.
    mask : numpy.ndarray, optional
        Ground truth for the mask metrics; without it only deletion and insertion are used.
    settings : list of dict, optional
        The grid, e.g. ``[{"metric": "deletion", "baseline": "blur", "steps": 20},
        {"metric": "pointing_game", "tolerance_mm": 2.0}]``; default :data:`DEFAULT_SETTINGS`.
    target : int, optional
        The class explained by every method (default: the predicted one).
    spacing : tuple of float, optional
    seed : int
    device : str
    method_params : dict, optional
        Per method, its parameters, e.g. ``{"integrated_gradients": {"steps": 16}}``.
    **kwargs
        Passed to :func:`~napari_xaimed.attribution.attribute` for every method.

    Returns
    -------
    RankingResult
        With the maps of each method in ``.maps``.
    """
    return run_steps(compare_methods_steps(model, volume, methods, **kwargs))
