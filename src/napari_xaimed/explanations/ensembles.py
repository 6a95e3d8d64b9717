"""Several explanations of one decision: ensembles of models, or one model with dropout kept on.

Repeated training with identical settings can give very different maps for some methods, so a
single map says little about how much of it to trust. :func:`ensemble_attribute` explains the
decision with every member and returns the mean map, the standard deviation (the uncertainty of
the relevance), a *reliable relevance* map (the mean where the spread is small beside it) and
how consistent the members' maps are (:func:`map_consistency`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed.attribution.run import Attribution, attribute_steps
from napari_xaimed.models.loading import LoadedModel, load_model


@dataclass
class MapConsistency:
    """Pairwise agreement of several maps of one shape.

    Attributes
    ----------
    spearman : numpy.ndarray
        ``(m, m)`` Spearman rank correlations of the maps (of their absolute values when
        ``absolute``).
    top_overlap : numpy.ndarray
        ``(m, m)`` shares of the ``top_fraction`` most relevant voxels that two maps have in
        common (``|A & B| / k``).
    top_fraction : float
    absolute : bool
    """

    spearman: np.ndarray
    top_overlap: np.ndarray
    top_fraction: float
    absolute: bool

    @staticmethod
    def _off_diagonal_mean(matrix: np.ndarray) -> float:
        m = len(matrix)
        if m < 2:
            return float("nan")
        return float((matrix.sum() - np.trace(matrix)) / (m * (m - 1)))

    @property
    def mean_spearman(self) -> float:
        """Mean over distinct pairs (NaN for fewer than two maps)."""
        return self._off_diagonal_mean(self.spearman)

    @property
    def mean_top_overlap(self) -> float:
        return self._off_diagonal_mean(self.top_overlap)

    def to_dict(self) -> dict[str, Any]:
        return {"mean_spearman": self.mean_spearman, "mean_top_overlap": self.mean_top_overlap,
                "spearman": self.spearman.tolist(), "top_overlap": self.top_overlap.tolist(),
                "top_fraction": self.top_fraction, "absolute": self.absolute}


def _top_set(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values (ties at the cut: the lowest indices)."""
    order = np.argsort(-values, kind="stable")
    return np.sort(order[:k])


def map_consistency(maps: list[np.ndarray], *, top_fraction: float = 0.01,
                    absolute: bool = True) -> MapConsistency:
    """How much several maps of one shape agree.

    Parameters
    ----------
    maps : list of numpy.ndarray
    top_fraction : float
        The share of voxels counted as "most relevant" for the top-k overlap.
    absolute : bool
        Compare magnitudes (default: a signed method's negative evidence counts as relevant).

    Returns
    -------
    MapConsistency
    """
    if not maps:
        raise XaimedError("no maps to compare.")
    shape = np.shape(maps[0])
    if any(np.shape(m) != shape for m in maps):
        raise XaimedError(f"the maps differ in shape: {[np.shape(m) for m in maps]}.")
    if not 0 < top_fraction <= 1:
        raise XaimedError(f"top_fraction must lie in (0, 1], got {top_fraction}.")
    flat = [np.abs(np.ravel(m)) if absolute else np.ravel(m) for m in maps]
    flat = [f.astype(np.float64) for f in flat]
    k = max(1, int(round(top_fraction * flat[0].size)))
    from scipy.stats import rankdata  # scipy.stats takes ~0.7 s to import: only when used

    ranks = [rankdata(f) for f in flat]
    tops = [_top_set(f, k) for f in flat]
    m = len(flat)
    spearman, overlap = np.eye(m), np.eye(m)
    for i in range(m):
        for j in range(i + 1, m):
            a, b = ranks[i] - ranks[i].mean(), ranks[j] - ranks[j].mean()
            denominator = np.sqrt((a * a).sum() * (b * b).sum())
            # a constant map has no ranking: its correlation with anything is undefined
            spearman[i, j] = spearman[j, i] = ((a * b).sum() / denominator
                                               if denominator > 0 else np.nan)
            overlap[i, j] = overlap[j, i] = len(np.intersect1d(tops[i], tops[j],
                                                               assume_unique=True)) / k
    return MapConsistency(spearman=spearman, top_overlap=overlap, top_fraction=top_fraction,
                          absolute=absolute)


def reliable_relevance(mean: np.ndarray, std: np.ndarray, reliability: float = 1.0
                       ) -> np.ndarray:
    """The mean map where the members agree: ``mean`` where ``std <= reliability * |mean|``,
    0 elsewhere (a coefficient of variation of at most ``reliability``)."""
    if reliability < 0:
        raise XaimedError(f"reliability must be >= 0, got {reliability}.")
    return np.where(std <= reliability * np.abs(mean), mean, 0).astype(np.float32)


class DropoutKept(torch.nn.Module):
    """A model whose dropout layers stay on in evaluation mode (Monte Carlo dropout): every
    forward pass draws new dropout masks."""

    #: its forward pass draws from torch's process-wide generator (see napari_xaimed._core.rng)
    draws_random = True

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.dropouts = [m for m in model.modules()
                         if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        if not self.dropouts:
            raise XaimedError("the model has no dropout layers, so kept-on dropout gives the "
                              "same map every time: give several models (an ensemble) instead.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modes = [layer.training for layer in self.dropouts]
        for layer in self.dropouts:
            layer.train()
        try:
            return self.model(x)
        finally:  # the user's model keeps its own modes between passes
            for layer, mode in zip(self.dropouts, modes, strict=True):
                layer.train(mode)


@dataclass
class EnsembleAttribution:
    """What :func:`ensemble_attribute` returns.

    Attributes
    ----------
    mean, std, reliable : numpy.ndarray
        float32 maps of the volume's shape (``std``: population standard deviation over the
        members).
    members : list of Attribution
    consistency : MapConsistency
    method : str
    target : int or None
    params : dict
        ``reliability``, ``dropout_passes``, the members' sources.
    """

    mean: np.ndarray
    std: np.ndarray
    reliable: np.ndarray
    members: list[Attribution]
    consistency: MapConsistency
    method: str
    target: int | None
    params: dict[str, Any] = field(default_factory=dict)


def _members(models: Any, dropout_passes: int | None) -> list[Any]:
    if dropout_passes is not None:
        if isinstance(models, list | tuple):
            if len(models) != 1:
                raise XaimedError("kept-on dropout runs one model several times: give one "
                                  "model with dropout_passes, or a list without it.")
            models = models[0]
        if int(dropout_passes) < 2:
            raise XaimedError(f"dropout_passes must be at least 2, got {dropout_passes}.")
        loaded = load_model(models)
        kept = DropoutKept(loaded.module)
        return [LoadedModel(module=kept, preprocessing=loaded.preprocessing,
                            classes=loaded.classes, source=f"{loaded.source} (dropout kept on)",
                            sha256=loaded.sha256, config_sha256=loaded.config_sha256,
                            trusted=loaded.trusted)] * int(dropout_passes)
    if not isinstance(models, list | tuple) or len(models) < 2:
        raise XaimedError("an ensemble needs at least two models (files or modules), or one "
                          "model with dropout_passes=N.")
    return list(models)


def ensemble_attribute_steps(
    models: Any, volume: np.ndarray, method: str = "saliency", *,
    dropout_passes: int | None = None, reliability: float = 1.0, top_fraction: float = 0.01,
    target: int | None = None, seed: int = 0, **kwargs: Any,
) -> Steps[EnsembleAttribution]:
    """Generator form of :func:`ensemble_attribute`."""
    members = _members(models, dropout_passes)
    maps: list[Attribution] = []
    for i, member in enumerate(members):
        # Every member explains the same class: the first member's choice when none is given.
        chosen = target if target is not None or not maps else maps[0].target
        maps.append((yield from within(
            attribute_steps(member, volume, method, target=chosen, seed=seed + i, **kwargs),
            i, len(members), f"member {i + 1} of {len(members)}: ")))
    yield Progress(1, 1, "comparing the members")
    stack = np.stack([a.map for a in maps]).astype(np.float64)
    mean, std = stack.mean(axis=0), stack.std(axis=0)
    return EnsembleAttribution(
        mean=mean.astype(np.float32), std=std.astype(np.float32),
        reliable=reliable_relevance(mean, std, reliability),
        members=maps, consistency=map_consistency([a.map for a in maps],
                                                  top_fraction=top_fraction),
        method=method, target=maps[0].target,
        params={"reliability": reliability, "dropout_passes": dropout_passes,
                "top_fraction": top_fraction, "seed": seed,
                "models": [a.model for a in maps]},
    )


def ensemble_attribute(models: Any, volume: np.ndarray, method: str = "saliency",
                       **kwargs: Any) -> EnsembleAttribution:
    """Explain one decision with several models and measure how much their maps agree.

    Parameters
    ----------
    models : list, or one model with ``dropout_passes``
        Models as :func:`~napari_xaimed.attribution.load_model` takes them (files, modules,
        ``"bundled"``), at least two.
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS`.
    dropout_passes : int, optional
        Instead of several models: run one model this many times with its dropout layers on.
    reliability : float
        The reliable map keeps the mean where ``std <= reliability * |mean|``.
    top_fraction : float
        For the consistency's top-k overlap.
    target : int, optional
        The class to explain; by default the first member's predicted class, for all members.
    seed : int
        Member ``i`` runs with ``seed + i`` (noise of the noisy methods, dropout masks).
    **kwargs
        Passed to :func:`~napari_xaimed.attribution.attribute` (device, preprocessing, the
        method's parameters...).

    Returns
    -------
    EnsembleAttribution
    """
    return run_steps(ensemble_attribute_steps(models, volume, method, **kwargs))
