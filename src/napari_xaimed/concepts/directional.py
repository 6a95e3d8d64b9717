"""Concept explanations: how much a human concept moves a model's decision.

- :func:`tcav`: Testing with Concept Activation Vectors (Kim et al. 2018), by Captum's
  ``captum.concept.TCAV``. A concept is a set of volumes (or of volumes with a mask: only the
  region, the rest set to the volume's mean outside it); its CAV separates the concept's
  activations at a layer from those of a random set. The TCAV score is the share of the inputs
  whose target score rises along the CAV. Each concept is trained against several random sets
  and tested against random-versus-random CAVs with a two-sided t-test, as the paper does.
  The CAVs (and the RCVs below) are fitted on standardised activations
  (:mod:`~napari_xaimed.concepts.cav`), so an offset or a channel's scale does not change
  the answer.
- :func:`regression_concepts`: Regression Concept Vectors (Graziani et al. 2018): a continuous
  measure per volume (lesion volume, mean intensity, sphericity, texture: see
  :mod:`~napari_xaimed.concepts.radiomics`, or any column of a case list) is regressed on
  the layer's activations; the regression direction is the RCV, the sensitivity of an input is
  the directional derivative of its target score along it, and the bidirectional relevance is
  ``R² · mean(sensitivity) / std(sensitivity)``, tested against RCVs of permuted measures.

Activations are those of the Grad-CAM default layer unless a layer is named (the last spatial
feature map: see :func:`~napari_xaimed.models.network.cam_layer`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.rng import model_draws, seeded
from napari_xaimed._core.validate import as_volume
from napari_xaimed.attribution.hooked import refuse_scripted
from napari_xaimed.models.device import pick_device
from napari_xaimed.models.loading import Scores, load_model
from napari_xaimed.models.network import cam_layer, record_calls
from napari_xaimed.models.preprocess import to_input

#: Fewest examples per concept (and per random set) a linear CAV is trained on.
MIN_EXAMPLES = 2


@dataclass(frozen=True)
class ConceptScore:
    """One concept's TCAV at one layer.

    Attributes
    ----------
    concept, layer : str
    score : float
        Mean TCAV score over the runs (share of inputs whose score rises along the CAV).
    scores : tuple of float
        Per run (one random set each).
    magnitude : float
        Mean directional derivative along the unit CAV (Captum's magnitude score).
    random_scores : tuple of float
        TCAV scores of random-versus-random CAVs, the null distribution.
    p_value : float
        Two-sided t-test of ``scores`` against ``random_scores``.
    significant : bool
        ``p_value < alpha``.
    """

    concept: str
    layer: str
    score: float
    scores: tuple[float, ...]
    magnitude: float
    random_scores: tuple[float, ...]
    p_value: float
    significant: bool


@dataclass(frozen=True)
class TCAVResult:
    """TCAV of every concept at every layer, for one target class."""

    scores: list[ConceptScore]
    target: int
    layers: list[str]
    runs: int
    alpha: float

    def to_dataframe(self) -> pd.DataFrame:
        rows = [{"concept": s.concept, "layer": s.layer, "tcav_score": s.score,
                 "magnitude": s.magnitude, "random_mean": float(np.mean(s.random_scores)),
                 "p_value": s.p_value, "significant": s.significant} for s in self.scores]
        return pd.DataFrame(rows)


class _Setup:
    """The model, device, preprocessing and the layer the concepts are read at."""

    def __init__(self, model: Any, layer: str | None, preprocessing: Any, device: Any,
                 probe: np.ndarray):
        loaded = load_model(model)
        self.prep = loaded.preprocessing.overridden(preprocessing)
        self.device = pick_device(device)
        self.network = loaded.module.to(self.device).eval()
        refuse_scripted("gradcam", self.network)  # the layer's activations need hooks
        self.module = Scores(self.network)
        x = to_input(probe, self.prep, self.device)
        self.size = tuple(x.shape[2:])
        with torch.no_grad():
            out = self.module(x)
        if out.ndim != 2:
            raise XaimedError(f"concept explanations need a classifier (scores per class); "
                              f"this model outputs shape {tuple(out.shape)}.")
        record = record_calls(self.network, x)
        self.layer, self.layer_module = cam_layer(record, layer,
                                                  dict(self.network.named_modules()))

    def batch(self, volumes: Sequence[np.ndarray]) -> torch.Tensor:
        """The volumes as one model-input batch, each resized to the first input's grid."""
        tensors = []
        for volume in volumes:
            x = to_input(volume, self.prep, self.device)
            if tuple(x.shape[2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="trilinear", align_corners=False)
            tensors.append(x)
        return torch.cat(tensors)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)

    def target(self, x: torch.Tensor, target: int | None) -> tuple[int, np.ndarray]:
        """The class to explain (given, or the one most of the batch is predicted as) and
        each volume's predicted class."""
        scores = self.scores(x)
        predicted = scores.argmax(dim=1)
        chosen = int(torch.mode(predicted).values) if target is None else int(target)
        n_classes = int(scores.shape[1])
        if not 0 <= chosen < n_classes:
            raise XaimedError(f"target class {chosen} does not exist: the model has "
                              f"{n_classes} classes (0..{n_classes - 1}).")
        return chosen, predicted.cpu().numpy()


def _example(item: Any, name: str) -> np.ndarray:
    """A concept example: a volume, or ``(volume, mask)``: the region, the rest at the mean
    of the volume outside it (so the concept is the region's content, not its absence)."""
    if isinstance(item, tuple | list) and len(item) == 2:
        volume = as_volume(item[0], name)
        mask = np.asarray(item[1]).astype(bool)
        if mask.shape != volume.shape:
            raise XaimedError(f"{name}: the mask {mask.shape} must have the volume's shape "
                              f"{volume.shape}.")
        if not mask.any() or mask.all():
            raise XaimedError(f"{name}: the mask is {'empty' if not mask.any() else 'full'}; "
                              "a concept mask marks the concept's region of the volume.")
        return np.where(mask, volume, volume[~mask].mean()).astype(np.float32)
    return as_volume(item, name)


def _examples(items: Sequence[Any], what: str) -> list[np.ndarray]:
    if isinstance(items, np.ndarray) and items.ndim == 3:
        items = [items]
    volumes = [_example(v, f"{what} example {i}") for i, v in enumerate(items)]
    if len(volumes) < MIN_EXAMPLES:
        raise XaimedError(f"{what} has {len(volumes)} example(s): a concept vector is a linear "
                          f"classifier and needs at least {MIN_EXAMPLES} (10 or more give "
                          "stable scores). Add volumes to the set.")
    return volumes


def tcav(model: Any, inputs: Sequence[Any], concepts: Mapping[str, Sequence[Any]], *,
         random_pool: Sequence[Any], layers: Sequence[str] | None = None,
         target: int | None = None, runs: int = 5, alpha: float = 0.05,
         preprocessing: Any = None, device: str = "auto", seed: int = 0) -> TCAVResult:
    """TCAV scores of concepts for a classifier's target class (Kim et al. 2018).

    Parameters
    ----------
    model : torch.nn.Module, path or LoadedModel
        A classifier (see :func:`~napari_xaimed.attribution.load_model`).
    inputs : sequence of arrays
        The volumes whose decisions are explained (e.g. cases of the target class).
    concepts : mapping of str to sequence
        Concept name to its examples: volumes, or ``(volume, mask)`` pairs.
    random_pool : sequence of arrays
        Volumes drawn at random (e.g. from the cohort), at least twice the largest concept
        set: each run draws two random sets from it without replacement.
    layers : sequence of str, optional
        Layer names; default: the last spatial feature map.
    target : int, optional
        Class to explain; default: the class most inputs are predicted as.
    runs : int
        Random sets per concept (and random-versus-random CAVs); at least 2 for the t-test.
    alpha : float
        Significance level of the t-test.
    preprocessing, device, seed
        As :func:`~napari_xaimed.attribution.attribute`; ``seed`` draws the random sets and
        seeds the CAV classifiers.

    Returns
    -------
    TCAVResult
    """
    from captum.concept import TCAV, Concept
    from scipy.stats import ttest_ind

    from napari_xaimed.concepts.cav import StandardisedClassifier

    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        inputs = [inputs]
    inputs_v = [as_volume(v, f"input {i}") for i, v in enumerate(inputs)]
    if not inputs_v:
        raise XaimedError("give at least one input volume whose decision is explained.")
    if not concepts:
        raise XaimedError("give at least one concept: a name and its example volumes.")
    sets = {name: _examples(items, f"concept {name!r}") for name, items in concepts.items()}
    pool = [as_volume(v, f"random volume {i}") for i, v in enumerate(random_pool)]
    size = max(len(v) for v in sets.values())
    if len(pool) < 2 * size:
        raise XaimedError(f"the random pool has {len(pool)} volumes: it needs at least "
                          f"{2 * size} (twice the largest concept set) to draw two disjoint "
                          "random sets per run. Add random cases from the cohort.")
    if int(runs) < 2:
        raise XaimedError(f"runs must be at least 2 for the significance test, got {runs}.")
    setup = _Setup(model, None if not layers else layers[0], preprocessing, device,
                   inputs_v[0])
    names = [setup.layer] + [str(n) for n in (layers or [])[1:]]
    modules = dict(setup.network.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise XaimedError(f"the model has no layer {missing[0]!r}.")
    x = setup.batch(inputs_v)
    chosen, _ = setup.target(x, target)
    rng = np.random.default_rng(seed)

    def concept(cid: int, name: str, volumes: list[np.ndarray]) -> Concept:
        return Concept(cid, name, [setup.batch(volumes)])

    made = {name: concept(i, name, vols) for i, (name, vols) in enumerate(sets.items())}
    experiments: list[list[Concept]] = []
    randoms = []
    for r in range(int(runs)):
        picked = rng.choice(len(pool), size=2 * size, replace=False)
        a = concept(1000 + 2 * r, f"random{2 * r}", [pool[i] for i in picked[:size]])
        b = concept(1001 + 2 * r, f"random{2 * r + 1}", [pool[i] for i in picked[size:]])
        randoms.append((a, b))
        experiments += [[made[name], a] for name in sets]
        experiments.append([b, a])
    # Captum's default classifier fits the raw activations, and TCAV answered at random when
    # they were not centred on zero: the CAVs are fitted on standardised activations instead
    # (a classifier seeded locally). A model that draws (dropout kept on) runs under the
    # seeding lock, so other jobs' draws stay out, and the caller's state is given back after.
    held = seeded(seed, x.device) if model_draws(setup.module) else contextlib.nullcontext()
    with held, tempfile.TemporaryDirectory() as folder:
        engine = TCAV(setup.module, [f"net.{n}" for n in names], model_id="xaimed",
                      classifier=StandardisedClassifier(seed), save_path=folder)
        result = engine.interpret(x, experiments, target=chosen)
    out = []
    for name in names:
        key = f"net.{name}"
        null = tuple(float(result[f"{b.id}-{a.id}"][key]["sign_count"][0]) for a, b in randoms)
        for cname, c in made.items():
            per_run = [result[f"{c.id}-{a.id}"][key] for a, _ in randoms]
            scores = tuple(float(s["sign_count"][0]) for s in per_run)
            magnitude = float(np.mean([float(s["magnitude"][0]) for s in per_run]))
            if np.ptp(scores + null) == 0:
                p = 1.0  # all runs agree exactly: no evidence either way
            else:
                p = float(ttest_ind(scores, null, equal_var=False).pvalue)
                p = 1.0 if not np.isfinite(p) else p
            out.append(ConceptScore(cname, name, float(np.mean(scores)), scores, magnitude,
                                    null, p, p < alpha))
    return TCAVResult(out, chosen, names, int(runs), float(alpha))


def _activations_and_gradients(setup: _Setup, x: torch.Tensor, target: int
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Per volume: the layer's channel means ``(n, C)`` and the target score's gradient with
    respect to a uniform per-channel shift of the layer's map ``(n, C)`` (the sum over the
    map of the gradient: the derivative along a direction given in channel-mean space)."""
    kept: list[torch.Tensor] = []

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        output.retain_grad()
        kept.append(output)

    handle = setup.layer_module.register_forward_hook(keep)
    acts, grads = [], []
    try:
        for i in range(x.shape[0]):
            kept.clear()
            # the input takes gradients too, so a layer without weights before it still has one
            score = setup.module(x[i:i + 1].clone().requires_grad_(True))[0, target]
            score.backward()
            a = kept[0]
            if a.ndim < 3:
                raise XaimedError(f"layer {setup.layer!r} gives no channel map: name a "
                                  "convolutional layer.")
            acts.append(a.detach().flatten(2).mean(dim=2)[0].cpu().numpy())
            grads.append(a.grad.flatten(2).sum(dim=2)[0].cpu().numpy())
    finally:
        handle.remove()
        setup.network.zero_grad(set_to_none=True)
    return np.asarray(acts, np.float64), np.asarray(grads, np.float64)


