"""Faithfulness of a heatmap to the model: deletion and insertion curves.

*Deletion* replaces the most relevant voxels (or supervoxels) of the volume with a baseline, a
growing share at a time, and tracks the model's score for the explained class: a faithful map
makes it fall fast (small area under the curve). *Insertion* starts from the baseline and puts
the most relevant voxels back first: the score should rise fast (large area). Petsiuk et al.
2018 (RISE) define both; Samek et al. 2017 the region-perturbation form.

Choices, stated because they change the numbers (and the ranking of methods, see
:mod:`~napari_xaimed.explanations.ranking`):

- The perturbation happens on the volume's own grid; the model's preprocessing then runs with the
  intensity scaling of the *original* volume (its mean and spread for z-scores, its range for
  min-max), so replacing some voxels changes only those voxels of the model's input.
- ``baseline``: ``"blur"`` (the volume smoothed by a Gaussian of ``blur_mm``, default: stays
  close to the image statistics), ``"mean"``, ``"min"``, ``"zero"`` or a number.
- Order: by relevance, highest first (ties in voxel order); with ``supervoxels=n``, SLIC
  supervoxels ranked by their mean relevance, whole supervoxels at a time.
- Score: the softmax probability of the class (``score="probability"``) or its logit.
- Area: trapezoid rule over the share of voxels replaced, from 0 to 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy.integrate import trapezoid

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.attribution.supervoxels import supervoxels as slic_supervoxels
from napari_xaimed.models.device import (
    auto_batch,
    forward_error,
    halved_batch,
    pick_device,
)
from napari_xaimed.models.loading import Scores, load_model
from napari_xaimed.models.preprocess import Preprocessing

BASELINES = ("blur", "mean", "min", "zero")
KINDS = ("deletion", "insertion")


@dataclass
class Curve:
    """A deletion or insertion curve.

    Attributes
    ----------
    kind : {"deletion", "insertion"}
    fractions : numpy.ndarray
        Share of the volume's voxels replaced (deletion) or restored (insertion), 0 to 1.
    scores : numpy.ndarray
        The model's score for ``target`` at each fraction.
    area : float
        Trapezoid area under ``scores`` over ``fractions``.
    target : int
    params : dict
        ``baseline``, ``steps``, ``supervoxels``, ``score``, ``blur_mm``.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    area: float
    target: int
    params: dict[str, Any] = field(default_factory=dict)


def baseline_volume(volume: np.ndarray, baseline: str | float, spacing: Any = None,
                    blur_mm: float = 5.0) -> np.ndarray:
    """The volume that replaces removed voxels (float32, the volume's shape)."""
    volume = np.asarray(volume, dtype=np.float32)
    if isinstance(baseline, int | float | np.number) and not isinstance(baseline, bool):
        return np.full(volume.shape, float(baseline), np.float32)
    if baseline == "blur":
        sigma = float(blur_mm) / np.asarray(as_spacing(spacing))
        return ndi.gaussian_filter(volume, sigma).astype(np.float32)
    if baseline == "mean":
        return np.full(volume.shape, float(volume.mean()), np.float32)
    if baseline == "min":
        return np.full(volume.shape, float(volume.min()), np.float32)
    if baseline == "zero":
        return np.zeros(volume.shape, np.float32)
    raise XaimedError(f"baseline must be one of {BASELINES} or a number, got {baseline!r}.")


def removal_order(heatmap: np.ndarray, volume: np.ndarray, supervoxels: int | None,
                  steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each voxel in the removal order (flat, 0 = first) and the number of voxels
    removed at each of the ``steps + 1`` points of the curve."""
    n = heatmap.size
    flat = heatmap.ravel().astype(np.float64)
    if supervoxels is None:
        order = np.argsort(-flat, kind="stable")
        counts = np.round(np.linspace(0, n, steps + 1)).astype(np.int64)
    else:
        labels = slic_supervoxels(volume, int(supervoxels)).ravel()
        n_seg = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=n_seg)
        mean = np.bincount(labels, flat, n_seg) / np.maximum(sizes, 1)
        seg_order = np.argsort(-mean, kind="stable")
        seg_rank = np.empty(n_seg, np.int64)
        seg_rank[seg_order] = np.arange(n_seg)
        order = np.argsort(seg_rank[labels], kind="stable")  # whole supervoxels, best first
        cut = np.round(np.linspace(0, n_seg, steps + 1)).astype(np.int64)
        counts = np.concatenate([[0], np.cumsum(sizes[seg_order])])[cut]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank.reshape(heatmap.shape), counts


class _Inputs:
    """The model's input for perturbed volumes, scaled like the original volume."""

    def __init__(self, volume: np.ndarray, prep: Preprocessing, device: torch.device):
        self.prep, self.device = prep, device
        x = np.asarray(volume, dtype=np.float32)
        if prep.scaling == "zscore":
            std = float(x.std())
            self.shift, self.scale = float(x.mean()), (std if std > 0 else 1.0)
        elif prep.scaling == "minmax":
            lo, hi = float(x.min()), float(x.max())
            self.shift, self.scale = lo, (hi - lo if hi > lo else 1.0)
        elif prep.scaling == "window":
            lo, hi = prep.window  # type: ignore[misc]
            self.shift, self.scale = float(lo), float(hi - lo)
        else:
            self.shift, self.scale = 0.0, 1.0

    def __call__(self, volumes: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(volumes).astype(np.float32))[:, None].to(self.device)
        if self.prep.scaling == "window":
            x = x.clamp(self.shift, self.shift + self.scale)
        x = (x - self.shift) / self.scale
        size = self.prep.input_size
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="trilinear", align_corners=False)
        return x


def perturbation_curve_steps(
    model: Any, volume: np.ndarray, heatmap: np.ndarray, kind: str = "deletion", *,
    target: int | None = None, baseline: str | float = "blur", steps: int = 20,
    supervoxels: int | None = None, score: str = "probability", spacing: Any = None,
    blur_mm: float = 5.0, device: str = "auto", batch_size: int | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> Steps[Curve]:
    """Generator form of :func:`deletion_curve` and :func:`insertion_curve`."""
    if kind not in KINDS:
        raise XaimedError(f"kind must be 'deletion' or 'insertion', got {kind!r}.")
    volume = as_volume(volume, "volume")
    heat = np.asarray(heatmap)
    if heat.shape != volume.shape:
        raise XaimedError(f"the heatmap {heat.shape} must have the volume's shape "
                          f"{volume.shape}: compute it on this volume.")
    if not np.all(np.isfinite(heat)):
        raise XaimedError("the heatmap holds NaN or infinite values.")
    if int(steps) < 1:
        raise XaimedError(f"steps must be at least 1, got {steps}.")
    if score not in ("probability", "logit"):
        raise XaimedError(f"score must be 'probability' or 'logit', got {score!r}.")
    loaded = load_model(model)
    prep = loaded.preprocessing.overridden(preprocessing)
    dev = pick_device(device)
    module = Scores(loaded.module.to(dev).eval())  # a ViT's (logits, hidden states): logits
    to_inputs = _Inputs(volume, prep, dev)
    base = baseline_volume(volume, baseline, spacing, blur_mm)
    yield Progress(0, int(steps) + 1, f"{kind}: ranking voxels")
    rank, counts = removal_order(heat, volume, supervoxels, int(steps))

    def scores_of(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = module(x)
        if out.ndim != 2:
            raise XaimedError("deletion and insertion curves need a classifier (class scores "
                              f"per volume); this model outputs shape {tuple(out.shape)}.")
        return out.float().softmax(dim=1) if score == "probability" else out.float()

    x = to_inputs([volume])
    try:
        first = scores_of(x)
    except XaimedError:
        raise
    except Exception as exc:  # noqa: BLE001 - out of memory, or an input that does not fit
        raise forward_error(exc, x) from exc
    if target is None:
        target = int(first.argmax(dim=1)[0])
    n_classes = int(first.shape[1])
    if not 0 <= int(target) < n_classes:
        raise XaimedError(f"target class {target} does not exist: the model has {n_classes} "
                          f"classes (0..{n_classes - 1}).")
    batch = int(batch_size) if batch_size else auto_batch(volume.size, dev, limit=16)
    values = np.empty(len(counts))
    start = 0
    while start < len(counts):
        stop = min(start + batch, len(counts))
        if kind == "deletion":
            perturbed = [np.where(rank < c, base, volume) for c in counts[start:stop]]
        else:
            perturbed = [np.where(rank < c, volume, base) for c in counts[start:stop]]
        try:
            out = scores_of(to_inputs(perturbed))
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            batch = halved_batch(exc, batch, dev)
            continue
        values[start:stop] = out[:, int(target)].cpu().numpy()
        start = stop
        yield Progress(start, len(counts), f"{kind}: {start} of {len(counts)} volumes scored")
    fractions = counts / volume.size
    return Curve(kind=kind, fractions=fractions, scores=values,
                 area=float(trapezoid(values, fractions)), target=int(target),
                 params={"baseline": baseline, "steps": int(steps), "supervoxels": supervoxels,
                         "score": score, "blur_mm": blur_mm})


def deletion_curve(model: Any, volume: np.ndarray, heatmap: np.ndarray, **kwargs: Any) -> Curve:
    """The model's score as the most relevant voxels are replaced by a baseline.

    Parameters
    ----------
    model : torch.nn.Module, path or "bundled"
        A classifier, as :func:`~napari_xaimed.attribution.load_model` takes it.
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    heatmap : numpy.ndarray
        Relevance on the volume's grid (higher = more important).
    target : int, optional
        The class whose score is tracked (default: the predicted class).
    baseline : {"blur", "mean", "min", "zero"} or float
    steps : int
        Points of the curve after the start (default 20).
    supervoxels : int, optional
        Remove SLIC supervoxels (about this many) instead of single voxels.
    score : {"probability", "logit"}
    spacing : tuple of float, optional
        Voxel size in mm, for ``blur_mm``.
    blur_mm : float
        Gaussian sigma of the ``"blur"`` baseline in mm.
    device, batch_size, preprocessing
        As for :func:`~napari_xaimed.attribution.attribute`.

    Returns
    -------
    Curve
        Lower area = more faithful.
    """
    return run_steps(perturbation_curve_steps(model, volume, heatmap, "deletion", **kwargs))


def insertion_curve(model: Any, volume: np.ndarray, heatmap: np.ndarray,
                    **kwargs: Any) -> Curve:
    """The model's score as the most relevant voxels are put back into the baseline first.

    Parameters are those of :func:`deletion_curve`. Higher area = more faithful.
    """
    return run_steps(perturbation_curve_steps(model, volume, heatmap, "insertion", **kwargs))
