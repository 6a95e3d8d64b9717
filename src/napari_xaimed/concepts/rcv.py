"""Regression concept vectors (RCV, Graziani et al. 2018): the direction in a layer's activations
along which a continuous measure (a radiomics feature, a size) grows, and how the class score
changes along it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_volume
from napari_xaimed.concepts.directional import (
    _activations_and_gradients,
    _Setup,
)


@dataclass(frozen=True)
class RegressionConcept:
    """One measure's regression concept vector and what it does to the target score.

    Attributes
    ----------
    feature, layer : str
    r2 : float
        Cross-validated R² of the measure predicted from the activations (0 when worse than
        the mean).
    sensitivities : tuple of float
        Per input, the directional derivative of the target score along the RCV.
    score : float
        Share of positive sensitivities (the TCAV score of the RCV).
    bidirectional_relevance : float
        ``r2 * mean(sensitivities) / std(sensitivities)``: positive when a larger measure
        raises the score; NaN when every sensitivity is the same (then ``score`` says it).
    p_value : float
        Share of RCVs of permuted measures with at least as large ``|relevance|``
        (``(1 + count) / (1 + permutations)``); NaN with the relevance.
    significant : bool
    """

    feature: str
    layer: str
    r2: float
    sensitivities: tuple[float, ...]
    score: float
    bidirectional_relevance: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class RCVResult:
    """Regression concept vectors of every measure, for one target class."""

    concepts: list[RegressionConcept]
    target: int
    layer: str
    permutations: int
    alpha: float

    def to_dataframe(self) -> pd.DataFrame:
        rows = [{"feature": c.feature, "layer": c.layer, "r2": c.r2, "score": c.score,
                 "bidirectional_relevance": c.bidirectional_relevance,
                 "p_value": c.p_value, "significant": c.significant} for c in self.concepts]
        return pd.DataFrame(rows)


def regression_concepts(model: Any, volumes: Sequence[Any],
                        features: Mapping[str, Sequence[float]] | pd.DataFrame, *,
                        layer: str | None = None, target: int | None = None,
                        permutations: int = 50, alpha: float = 0.05, ridge: float = 1.0,
                        preprocessing: Any = None, device: str = "auto", seed: int = 0,
                        ) -> RCVResult:
    """Regression concept vectors of continuous measures (Graziani et al. 2018).

    Parameters
    ----------
    model : torch.nn.Module, path or LoadedModel
        A classifier.
    volumes : sequence of arrays
        The cases (at least 5): the RCVs are fitted on them and their sensitivities reported.
    features : mapping or DataFrame
        Measure name to one value per volume (e.g. the columns of
        :func:`~napari_xaimed.concepts.radiomics.region_features` over the cases, or of a
        case list: age, lesion volume).
    layer : str, optional
        Default: the last spatial feature map.
    target : int, optional
        Default: the class most volumes are predicted as.
    permutations : int
        RCVs of permuted measures for the significance test.
    alpha : float
    ridge : float
        Ridge penalty of the regression on standardised activations (the activations have
        more channels than there are cases).
    preprocessing, device, seed
        As :func:`~napari_xaimed.attribution.attribute`; ``seed`` draws the permutations and
        the cross-validation folds.

    Returns
    -------
    RCVResult
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    from napari_xaimed.concepts.cav import activation_direction, standardise

    vols = [as_volume(v, f"volume {i}") for i, v in enumerate(volumes)]
    if len(vols) < 5:
        raise XaimedError(f"regression concepts need at least 5 volumes to fit and "
                          f"cross-validate a regression, got {len(vols)}.")
    table = pd.DataFrame(dict(features)) if not isinstance(features, pd.DataFrame) \
        else features.reset_index(drop=True)
    if table.empty or len(table.columns) == 0:
        raise XaimedError("give at least one measure (a column of values, one per volume).")
    if len(table) != len(vols):
        raise XaimedError(f"the measures have {len(table)} values but there are {len(vols)} "
                          "volumes: give one value per volume, in the same order.")
    setup = _Setup(model, layer, preprocessing, device, vols[0])
    x = setup.batch(vols)
    chosen, _ = setup.target(x, target)
    acts, grads = _activations_and_gradients(setup, x, chosen)
    z, scaler = standardise(acts)
    rng = np.random.default_rng(seed)
    folds = KFold(n_splits=min(5, len(vols)), shuffle=True, random_state=seed)

    def relevance(values: np.ndarray) -> tuple[float, np.ndarray]:
        regression = Ridge(alpha=ridge).fit(z, values)
        direction = activation_direction(regression.coef_, scaler.scale_)
        if not direction.any():
            return 0.0, np.zeros(len(vols))
        sens = grads @ direction
        predicted_values = cross_val_predict(Ridge(alpha=ridge), z, values, cv=folds)
        r2 = max(0.0, float(r2_score(values, predicted_values)))
        spread = float(sens.std())
        # equal sensitivities everywhere (a linear score): the ratio is not defined
        return (r2 * float(sens.mean()) / spread if spread > 0 else float("nan")), sens

    out = []
    for name in table.columns:
        values = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(values)):
            raise XaimedError(f"measure {name!r} has missing or non-numeric values: give a "
                              "number per volume (or drop the column).")
        if np.ptp(values) == 0:
            raise XaimedError(f"measure {name!r} is the same for every volume: there is "
                              "nothing to regress.")
        br, sens = relevance(values)
        null = [relevance(rng.permutation(values))[0] for _ in range(int(permutations))]
        p = (float("nan") if not np.isfinite(br) else
             (1 + sum(not abs(b) < abs(br) for b in null)) / (1 + int(permutations)))
        predicted_values = cross_val_predict(Ridge(alpha=ridge), z, values, cv=folds)
        r2 = max(0.0, float(r2_score(values, predicted_values)))
        out.append(RegressionConcept(str(name), setup.layer, r2, tuple(map(float, sens)),
                                     float(np.mean(sens > 0)), float(br), float(p),
                                     p < alpha))
    return RCVResult(out, chosen, setup.layer, int(permutations), float(alpha))
