"""The model-parameter randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps").

The layers of a copy of the model are re-initialised one after another from the output down
(cascading: each step keeps the earlier randomisations), and after each step the explanation is
recomputed and compared with the original one. A method whose map barely changes while the
model is destroyed explains the input (edges, intensities), not the model.

Similarity: Spearman rank correlation of the two maps (of their absolute values by default, as
Adebayo et al. report) and SSIM of the maps scaled to [0, 1] by their largest magnitude
(``skimage.metrics.structural_similarity``). The explained class stays the original one.
The user's model is never changed: the randomisation runs on a deep copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.rng import seeded
from napari_xaimed.attribution.run import attribute_steps
from napari_xaimed.explanations.ensembles import map_consistency
from napari_xaimed.models.loading import LoadedModel, load_model


@dataclass
class RandomisationResult:
    """Similarity of the map to the original after each cascading randomisation step.

    Attributes
    ----------
    layers : list of str
        The layer randomised at each step (top first); each step keeps the earlier ones.
    spearman, ssim : list of float
        Similarity to the original map after each step (1: unchanged).
    method : str
    target : int or None
    maps : list of numpy.ndarray
        The maps after each step, when asked for (``keep_maps=True``).
    """

    layers: list[str]
    spearman: list[float]
    ssim: list[float]
    method: str
    target: int | None
    maps: list[np.ndarray] = field(default_factory=list, repr=False)

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame({"randomised down to": self.layers, "spearman": self.spearman,
                             "ssim": self.ssim})


def parameter_layers(module: torch.nn.Module) -> list[str]:
    """Names of the modules that hold parameters themselves, in definition order (for the
    usual sequential networks, input to output)."""
    return [name for name, m in module.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def randomise_layer(layer: torch.nn.Module, seed: int) -> None:
    """Re-initialise a layer's own parameters in place: its ``reset_parameters`` when it has
    one, else normal noise with each parameter's own spread."""
    device = next(layer.parameters(recurse=False), torch.empty(0)).device
    with seeded(seed, device):  # reset_parameters draws from torch's global generator
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
            return
        with torch.no_grad():
            for p in layer.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 else 1.0
                p.normal_(0.0, std if std > 0 else 1.0)


def map_ssim(a: np.ndarray, b: np.ndarray, absolute: bool = True) -> float:
    """SSIM of two maps scaled to [0, 1] by their largest magnitude (window 7, or the largest
    odd size that fits a small volume)."""
    from skimage.metrics import structural_similarity

    def scaled(m: np.ndarray) -> np.ndarray:
        m = np.abs(m) if absolute else m
        peak = float(np.max(np.abs(m)))
        return (m / peak if peak > 0 else m).astype(np.float64)

    win = min(7, *(s if s % 2 else s - 1 for s in a.shape))
    if win < 3:
        raise XaimedError(f"the maps {a.shape} are too small for SSIM (3 voxels per axis at "
                          "least).")
    return float(structural_similarity(scaled(a), scaled(b), win_size=win,
                                       data_range=1.0 if absolute else 2.0))


def randomisation_test_steps(
    model: Any, volume: np.ndarray, method: str = "saliency", *, target: int | None = None,
    seed: int = 0, absolute: bool = True, keep_maps: bool = False, **kwargs: Any,
) -> Steps[RandomisationResult]:
    """Generator form of :func:`randomisation_test`."""
    loaded = load_model(model)
    layers = parameter_layers(loaded.module)
    if not layers:
        raise XaimedError("the model has no layers with parameters to randomise.")
    parts = len(layers) + 1
    original = yield from within(attribute_steps(loaded, volume, method, target=target,
                                                 seed=seed, **kwargs),
                                 0, parts, "original model: ")
    randomised = copy.deepcopy(loaded.module)
    modules = dict(randomised.named_modules())
    copy_loaded = LoadedModel(module=randomised, preprocessing=loaded.preprocessing,
                              classes=loaded.classes, source=f"{loaded.source} (randomised)",
                              sha256=loaded.sha256)
    spearman, ssim, maps, names = [], [], [], []
    for i, name in enumerate(reversed(layers), start=1):
        randomise_layer(modules[name], seed + i)
        copy_loaded.checked.clear()
        result = yield from within(attribute_steps(copy_loaded, volume, method,
                                                   target=original.target, seed=seed,
                                                   **kwargs),
                                   i, parts, f"randomised down to {name}: ")
        names.append(name)
        spearman.append(float(map_consistency([original.map, result.map],
                                              absolute=absolute).spearman[0, 1]))
        ssim.append(map_ssim(original.map, result.map, absolute))
        if keep_maps:
            maps.append(result.map)
    yield Progress(1, 1, "done")
    return RandomisationResult(layers=names, spearman=spearman, ssim=ssim, method=method,
                               target=original.target, maps=maps)


def randomisation_test(model: Any, volume: np.ndarray, method: str = "saliency",
                       **kwargs: Any) -> RandomisationResult:
    """Cascading model-parameter randomisation test of an attribution method.

    Parameters
    ----------
    model : torch.nn.Module, path or "bundled"
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS`.
    target : int, optional
        The class explained throughout (default: the original model's prediction).
    seed : int
        Seeds the re-initialisation (layer ``i`` with ``seed + i``) and noisy methods.
    absolute : bool
        Compare magnitudes (default True).
    keep_maps : bool
        Keep each step's map on the result.
    **kwargs
        Passed to :func:`~napari_xaimed.attribution.attribute`.

    Returns
    -------
    RandomisationResult
        Similarity after each step; a method that passes drops well below 1.
    """
    return run_steps(randomisation_test_steps(model, volume, method, **kwargs))
