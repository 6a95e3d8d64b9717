"""Cases and latent space: what a model's layer makes of a cohort.

- :func:`embed`: one embedding per volume, the channel means of a layer (default: the last
  spatial feature map, as Grad-CAM's), with the direction in that space along which the target
  score rises (the mean gradient of the score for a uniform shift of each channel).
- :func:`case_embedding` / :func:`assemble`: the same, one volume at a time (a cohort's cases
  on Dask workers, see :class:`napari_xaimed.cohort.EmbeddingJob`), then put together.
- what is read from the embeddings (:func:`project`, :func:`similar_cases`,
  :func:`confounder_scores`) is in :mod:`~napari_xaimed.latent.space` (importable from here
  too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_volume
from napari_xaimed.concepts.directional import _activations_and_gradients, _Setup
from napari_xaimed.latent.space import (  # noqa: F401 - also importable from here, as before
    Embeddings,
    confounder_scores,
    project,
    similar_cases,
)


def embed(model: Any, volumes: Sequence[Any], *, ids: Sequence[str] | None = None,
          layer: str | None = None, target: int | None = None, preprocessing: Any = None,
          device: str = "auto") -> Embeddings:
    """Embeddings of ``volumes`` at a layer of a classifier.

    Parameters
    ----------
    model : torch.nn.Module, path or LoadedModel
    volumes : sequence of arrays
        3D volumes (resized to the first one's model grid when they differ).
    ids : sequence of str, optional
        Case ids; default ``"0"``, ``"1"``, ...
    layer : str, optional
        Default: the last spatial feature map.
    target : int, optional
        The class whose decision direction is computed; default: the class most volumes are
        predicted as.
    preprocessing, device
        As :func:`~napari_xaimed.attribution.attribute`.

    Returns
    -------
    Embeddings
    """
    vols = [as_volume(v, f"volume {i}") for i, v in enumerate(volumes)]
    if len(vols) < 2:
        raise XaimedError(f"a latent space needs at least 2 volumes, got {len(vols)}.")
    names = [str(i) for i in range(len(vols))] if ids is None else [str(i) for i in ids]
    if len(names) != len(vols):
        raise XaimedError(f"{len(names)} ids for {len(vols)} volumes: give one id per volume.")
    setup = _Setup(model, layer, preprocessing, device, vols[0])
    x = setup.batch(vols)
    chosen, predicted = setup.target(x, target)
    vectors, grads = _activations_and_gradients(setup, x, chosen)
    return Embeddings(vectors, _unit(grads.mean(axis=0)), setup.layer, chosen, names, predicted)


def _unit(direction: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(direction))
    return direction / norm if norm > 0 else direction


# Without a target, a case's gradients are kept for every class so that the cohort's target can
# be chosen once all cases are in (the class most are predicted as); past this many classes
# that costs too many backward passes, and a target must be named.
MAX_CLASSES = 32


@dataclass(frozen=True)
class CaseEmbedding:
    """One volume's embedding at a layer.

    Attributes
    ----------
    vector : numpy.ndarray
        ``(channels,)`` channel means of the layer.
    gradients : dict of int to numpy.ndarray
        Per class (every class, or only the target when one was named): the gradient of its
        score along each channel's uniform shift, ``(channels,)``.
    scores : numpy.ndarray
        ``(classes,)`` the model's scores.
    layer : str
    """

    vector: np.ndarray
    gradients: dict[int, np.ndarray]
    scores: np.ndarray
    layer: str

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.scores))


def case_embedding(model: Any, volume: Any, *, layer: str | None = None,
                   target: int | None = None, preprocessing: Any = None,
                   device: str = "auto") -> CaseEmbedding:
    """The embedding of one volume, as :func:`embed` computes it for each of a set.

    Parameters
    ----------
    model, volume
        A classifier (module, path or LoadedModel) and a 3D volume.
    layer, preprocessing, device
        As :func:`embed`.
    target : int, optional
        The class whose gradient is kept; default: every class (at most
        :data:`MAX_CLASSES`), so the cohort's target can be picked later (:func:`assemble`).

    Returns
    -------
    CaseEmbedding

    Notes
    -----
    A lazy volume (dask, e.g. a Zarr larger than memory) is scaled and resized to the model's
    ``input_size`` slab by slab (:func:`~napari_xaimed.attribution.lazy.downsample_lazy`, the
    in-memory resize up to float rounding); a model without ``input_size`` is refused.
    """
    from napari_xaimed.io.lazy import is_lazy

    if is_lazy(volume):
        model, volume, preprocessing = _model_input_lazy(model, volume, preprocessing)
    vol = as_volume(volume, "the volume")
    setup = _Setup(model, layer, preprocessing, device, vol)
    x = setup.batch([vol])
    scores = setup.scores(x)[0].cpu().numpy().astype(np.float64)
    if target is not None:
        setup.target(x, target)  # refuses a class the model does not have
        classes = [int(target)]
    elif len(scores) > MAX_CLASSES:
        raise XaimedError(f"the model has {len(scores)} classes: name the target class whose "
                          f"decision direction to compute (at most {MAX_CLASSES} are kept "
                          "without one).")
    else:
        classes = list(range(len(scores)))
    gradients = {}
    for c in classes:
        vectors, grads = _activations_and_gradients(setup, x, c)
        gradients[c] = grads[0]
    return CaseEmbedding(vectors[0], gradients, scores, setup.layer)


def _model_input_lazy(model: Any, volume: Any, preprocessing: Any
                      ) -> tuple[Any, np.ndarray, Any]:
    """The loaded model (loaded once), a lazy volume as its input, read slab by slab, and the
    preprocessing that leaves that input as it is."""
    from napari_xaimed.attribution.lazy import downsample_lazy
    from napari_xaimed.models.loading import load_model

    if len(volume.shape) != 3:
        raise XaimedError(f"the volume must be 3D (z, y, x), got shape {tuple(volume.shape)}.")
    loaded = load_model(model)
    prep = loaded.preprocessing.overridden(preprocessing)
    if prep.input_size is None:
        raise XaimedError(
            "this volume is read lazily (larger than memory) and the model takes volumes at "
            "their own size (no input_size): embed a crop (volume[z0:z1].compute()), or set "
            "preprocessing={'input_size': (z, y, x)} if the model accepts a resized volume.")
    small = downsample_lazy(volume, tuple(int(n) for n in prep.input_size), prep)
    return loaded, small, {"scaling": "none", "input_size": None}


def assemble(ids: Sequence[str], cases: Sequence[CaseEmbedding], *,
             target: int | None = None) -> Embeddings:
    """Put one embedding per case together into :class:`Embeddings`.

    Parameters
    ----------
    ids : sequence of str
    cases : sequence of CaseEmbedding
        From :func:`case_embedding`, with the same layer and number of channels.
    target : int, optional
        The class whose decision direction is used; default: the class most cases are
        predicted as (ties: the lowest).

    Returns
    -------
    Embeddings
    """
    if len(ids) != len(cases):
        raise XaimedError(f"{len(ids)} ids for {len(cases)} embeddings: give one id per case.")
    if len(cases) < 2:
        raise XaimedError(f"a latent space needs at least 2 cases, got {len(cases)}.")
    layers = {c.layer for c in cases}
    sizes = {c.vector.shape for c in cases}
    if len(layers) > 1 or len(sizes) > 1:
        raise XaimedError(f"the cases' embeddings come from different layers {sorted(layers)} "
                          f"or sizes {sorted(sizes)}: embed every case with the same model "
                          "and layer.")
    predicted = np.array([c.predicted for c in cases])
    chosen = int(np.bincount(predicted).argmax()) if target is None else int(target)
    lacking = [i for i, c in zip(ids, cases, strict=True) if chosen not in c.gradients]
    if lacking:
        raise XaimedError(f"case(s) {lacking[:5]} have no gradient for class {chosen}: embed "
                          "them again without a target, or with this one.")
    decision = np.mean([c.gradients[chosen] for c in cases], axis=0)
    return Embeddings(np.stack([c.vector for c in cases]).astype(np.float64), _unit(decision),
                      layers.pop(), chosen, [str(i) for i in ids], predicted)
