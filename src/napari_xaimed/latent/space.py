"""The latent space of a cohort (:class:`Embeddings`, made by
:mod:`~napari_xaimed.latent.embedding`) and what is read from it:

- :func:`project`: a 2D (or nD) scatter of the embeddings by PCA (scikit-learn) or UMAP
  (``umap-learn``, the ``[latent]`` extra).
- :func:`similar_cases`: the ``k`` cases nearest to a query in the latent space.
- :func:`confounder_scores`: how much a metadata column (age, sex, scanner) is written into the
  latent space along the model's decision, in the spirit of DeepRepViz's Con-score (Rane et
  al. 2023): ``|cos(decision, confounder direction)| · R²`` of the column predicted from the
  embeddings (cross-validated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from napari_xaimed._core.errors import XaimedError


@dataclass(frozen=True)
class Embeddings:
    """A layer's view of a set of volumes.

    Attributes
    ----------
    vectors : numpy.ndarray
        ``(n, channels)``: the layer's channel means per volume.
    decision : numpy.ndarray
        ``(channels,)``: unit direction along which the target score rises, averaged over the
        volumes.
    layer : str
    target : int
        The class whose score defines ``decision``.
    ids : list of str
        Case ids (or indices as text), in order.
    predicted : numpy.ndarray
        ``(n,)`` the model's predicted class per volume.
    """

    vectors: np.ndarray
    decision: np.ndarray
    layer: str
    target: int
    ids: list[str]
    predicted: np.ndarray


def project(embeddings: Embeddings | np.ndarray, method: str = "pca", *, dimensions: int = 2,
            seed: int = 0, neighbours: int = 15) -> np.ndarray:
    """Coordinates ``(n, dimensions)`` of the embeddings for a scatter plot.

    Parameters
    ----------
    embeddings : Embeddings or array ``(n, d)``
    method : {"pca", "umap"}
        PCA of the standardised embeddings, or UMAP (needs ``umap-learn``).
    dimensions : int
    seed : int
        UMAP's random state.
    neighbours : int
        UMAP's ``n_neighbors`` (capped at ``n - 1``).
    """
    vectors = _vectors(embeddings)
    n, d = vectors.shape
    if not 1 <= int(dimensions) <= min(n, d):
        raise XaimedError(f"dimensions must be between 1 and {min(n, d)} for {n} cases of "
                          f"{d} channels, got {dimensions}.")
    z = _standardised(vectors)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=int(dimensions)).fit_transform(z)
    if method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise XaimedError("UMAP needs the umap-learn package: pip install "
                              "'napari-xaimed[latent]' (or umap-learn), or use method='pca'."
                              ) from exc
        if n < 4:
            raise XaimedError(f"UMAP needs at least 4 cases, got {n}: use method='pca'.")
        reducer = umap.UMAP(n_components=int(dimensions), random_state=seed,
                            n_neighbors=max(2, min(int(neighbours), n - 1)))
        return np.asarray(reducer.fit_transform(z))
    raise XaimedError(f"unknown projection {method!r}: choose 'pca' or 'umap'.")


def similar_cases(embeddings: Embeddings, query: int | str | np.ndarray, k: int = 5, *,
                  metric: str = "cosine") -> pd.DataFrame:
    """The ``k`` cases nearest to ``query`` in the latent space.

    Parameters
    ----------
    embeddings : Embeddings
    query : int, str or array
        A case (index or id; it is left out of its own neighbours) or an embedding vector
        (e.g. of the volume in the viewer, from :func:`embed`).
    k : int
    metric : {"cosine", "euclidean"}
        On the standardised embeddings.

    Returns
    -------
    pandas.DataFrame
        ``rank``, ``case_id``, ``index``, ``distance``, nearest first.
    """
    from sklearn.metrics import pairwise_distances

    if metric not in ("cosine", "euclidean"):
        raise XaimedError(f"unknown metric {metric!r}: choose 'cosine' or 'euclidean'.")
    vectors = embeddings.vectors
    mean, std = vectors.mean(axis=0), vectors.std(axis=0)
    std[std == 0] = 1.0
    own = None
    if isinstance(query, str):
        if query not in embeddings.ids:
            raise XaimedError(f"no case {query!r} in the embeddings.")
        own = embeddings.ids.index(query)
    elif isinstance(query, int | np.integer):
        if not 0 <= int(query) < len(vectors):
            raise XaimedError(f"case index {query} is out of range (0..{len(vectors) - 1}).")
        own = int(query)
    if own is not None:
        q = vectors[own]
    else:
        q = np.asarray(query, np.float64).ravel()
        if q.shape != (vectors.shape[1],):
            raise XaimedError(f"the query has {q.size} values; the embeddings have "
                              f"{vectors.shape[1]} channels.")
    distances = pairwise_distances(((q - mean) / std)[None], (vectors - mean) / std,
                                   metric=metric)[0]
    order = [i for i in np.argsort(distances, kind="stable") if i != own]
    if not 1 <= int(k) <= len(order):
        raise XaimedError(f"k must be between 1 and {len(order)}, got {k}.")
    picked = order[:int(k)]
    return pd.DataFrame({"rank": np.arange(1, len(picked) + 1),
                         "case_id": [embeddings.ids[i] for i in picked],
                         "index": picked, "distance": distances[picked]})


def confounder_scores(embeddings: Embeddings, metadata: pd.DataFrame,
                      columns: Sequence[str], *, ridge: float = 1.0, seed: int = 0
                      ) -> pd.DataFrame:
    """How strongly each metadata column is encoded along the model's decision.

    For a column ``c``: a ridge regression of ``c`` on the standardised embeddings gives the
    direction in which ``c`` grows and a cross-validated ``R²`` (how much of ``c`` the latent
    space holds); ``alignment`` is ``|cos|`` of that direction with the decision direction;
    ``con_score = alignment · R²``. A column the latent space does not hold, or holds
    orthogonally to the decision, scores about 0; one the model decides by scores near 1.
    A categorical column is scored per category (one-vs-rest, ``"scanner=B"``).

    Parameters
    ----------
    embeddings : Embeddings
    metadata : pandas.DataFrame
        One row per case, in the embeddings' order or indexed by their ids.
    columns : sequence of str
        Columns to score.
    ridge : float
        Ridge penalty.
    seed : int
        Of the cross-validation folds.

    Returns
    -------
    pandas.DataFrame
        ``variable``, ``r2``, ``alignment``, ``con_score``, sorted by ``con_score``.
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    if not columns:
        raise XaimedError("name at least one metadata column to score.")
    missing = [c for c in columns if c not in metadata.columns]
    if missing:
        raise XaimedError(f"the case list has no column(s) {missing}; its columns: "
                          f"{list(metadata.columns)}.")
    n = len(embeddings.ids)
    if set(embeddings.ids) <= {str(i) for i in metadata.index} and \
            len(metadata) >= n and not metadata.index.equals(pd.RangeIndex(len(metadata))):
        table = metadata.set_axis([str(i) for i in metadata.index]).loc[embeddings.ids]
    elif len(metadata) == n:
        table = metadata.reset_index(drop=True)
    else:
        raise XaimedError(f"the metadata has {len(metadata)} rows for {n} cases: give one row "
                          "per case, in order or indexed by case id.")
    if n < 5:
        raise XaimedError(f"confounder scores need at least 5 cases to cross-validate, got {n}.")
    mean, std = embeddings.vectors.mean(axis=0), embeddings.vectors.std(axis=0)
    std[std == 0] = 1.0
    z = (embeddings.vectors - mean) / std
    decision = embeddings.decision * std  # the decision direction in standardised units
    decision_norm = float(np.linalg.norm(decision))
    folds = KFold(n_splits=min(5, n), shuffle=True, random_state=seed)
    rows = []
    for column in columns:
        for name, values in _variables(table[column], column):
            if np.ptp(values) == 0:
                raise XaimedError(f"{name!r} has the same value for every case: nothing to "
                                  "score.")
            direction = Ridge(alpha=ridge).fit(z, values).coef_
            predicted = cross_val_predict(Ridge(alpha=ridge), z, values, cv=folds)
            r2 = max(0.0, float(r2_score(values, predicted)))
            norm = float(np.linalg.norm(direction))
            alignment = (abs(float(direction @ decision)) / (norm * decision_norm)
                         if norm > 0 and decision_norm > 0 else 0.0)
            rows.append({"variable": name, "r2": r2, "alignment": alignment,
                         "con_score": alignment * r2})
    return pd.DataFrame(rows).sort_values("con_score", ascending=False, kind="stable") \
        .reset_index(drop=True)


def _variables(series: pd.Series, column: str) -> list[tuple[str, np.ndarray]]:
    """A numeric column as itself; a categorical one as 0/1 per category (one for two)."""
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().all():
        return [(column, numeric.to_numpy(np.float64))]
    if series.isna().any():
        raise XaimedError(f"column {column!r} has empty cells: fill or drop those cases.")
    categories = sorted(series.astype(str).unique())
    if len(categories) < 2:
        return [(column, np.zeros(len(series)))]
    picked = categories[1:] if len(categories) == 2 else categories
    return [(f"{column}={c}", (series.astype(str) == c).to_numpy(np.float64)) for c in picked]


def _vectors(embeddings: Embeddings | np.ndarray) -> np.ndarray:
    vectors = embeddings.vectors if isinstance(embeddings, Embeddings) else \
        np.asarray(embeddings, np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise XaimedError(f"embeddings must be (cases, channels) with 2 or more cases, got "
                          f"shape {vectors.shape}.")
    if not np.all(np.isfinite(vectors)):
        raise XaimedError("the embeddings hold NaN or infinite values.")
    return vectors


def _standardised(vectors: np.ndarray) -> np.ndarray:
    std = vectors.std(axis=0)
    std[std == 0] = 1.0
    return (vectors - vectors.mean(axis=0)) / std
