"""KernelSHAP over supervoxels of a region of interest, for a segmentation network run by
sliding windows, with the windows the perturbation leaves alone taken from a cache (the idea
of arXiv 2604.11775 for nnU-Net).

The explained score is MONAI's sliding-window model summed over a region (see
:mod:`~napari_xaimed.models.windows` for the windows and their importance map ``imp``):

    T(x) = sum_{v in R} out[c](v),  out(v) = sum_w imp_w(v) net(x_w)(v) / N(v),

which is a sum of window terms ``t_w = sum_v (imp_w R / N)(v) net(x_w)[c](v)``, each depending
on its own window's input only. KernelSHAP perturbs supervoxels inside a box around the region
(everything outside the box stays as it is); a perturbed volume changes only the windows that
overlap a supervoxel set to the baseline, so only those are run again and every other term is
the unperturbed pass's. Windows whose weight ``imp R / N`` is zero everywhere (they do not
reach the region) never run at all.

The sampling and the weighted linear regression are Captum's ``KernelShap`` itself, called with
this cached score as its forward: same feature mask, samples and seed give Captum's values
(tested against ``KernelShap`` around MONAI's ``sliding_window_inference``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.rng import seeded
from napari_xaimed.models.windows import window_grid


class CachedWindowScore:
    """``T`` of a volume whose only changes from ``x`` lie inside ``box``, evaluated on the
    crop ``x[box]`` (``(n, C, dz, dy, dx)``): the windows that see no change come from the
    unperturbed pass.

    Attributes
    ----------
    window_passes : int
        Windows run through the network so far (the unperturbed pass included).
    windows : int
        Windows in MONAI's sliding-window grid over the volume.
    active : int
        Windows that reach the region (the only ones ``T`` depends on).
    """

    def __init__(self, network: torch.nn.Module, x: torch.Tensor, region: torch.Tensor,
                 channel: int, roi_size: Sequence[int], box: Sequence[slice], *,
                 overlap: float = 0.25, mode: str = "constant", sw_batch_size: int = 4,
                 cache: bool = True):
        self.network, self.channel, self.cache = network, int(channel), cache
        self.sw_batch_size = max(1, int(sw_batch_size))
        grid = window_grid(x.shape[2:], roi_size, overlap, mode, x.device)
        self.grid, self.box = grid, tuple(box)
        pad = []
        for n, p, b in reversed(list(zip(grid.shape, grid.padded, grid.before, strict=True))):
            pad += [b, p - n - b]  # MONAI pads with zeros, diff // 2 before
        self.pad = pad
        self.x = F.pad(x, pad, mode="constant", value=0.0)
        region_p = F.pad(region.to(torch.float64)[None, None], pad)[0, 0]
        norm = grid.normaliser(0, grid.padded[0]).to(torch.float64)
        imp = grid.importance.to(torch.float64)
        self.weights: list[torch.Tensor] = []
        self.starts: list[tuple[int, int, int]] = []
        for start in grid.starts:
            sl = tuple(slice(s, s + r) for s, r in zip(start, grid.roi, strict=True))
            weight = imp * region_p[sl] / norm[sl]
            if bool(weight.any()):
                self.starts.append(start)
                self.weights.append(weight)
        self.windows, self.active = len(grid.starts), len(self.starts)
        self.window_passes = 0
        self._work: torch.Tensor | None = None
        # where each active window meets the box, in crop coordinates (None: it does not)
        self.overlaps = [self._overlap(start) for start in self.starts]
        self.crop = x[(slice(None), slice(None), *self.box)].detach().clone()
        with torch.no_grad():
            self.terms = self._terms([self.x] * self.active, list(range(self.active)))

    def _overlap(self, start: tuple[int, int, int]) -> tuple[slice, ...] | None:
        out = []
        for s, r, b, box in zip(start, self.grid.roi, self.grid.before, self.box, strict=True):
            lo, hi = max(s - b, box.start), min(s - b + r, box.stop)
            if lo >= hi:
                return None
            out.append(slice(lo - box.start, hi - box.start))
        return tuple(out)

    def _terms(self, volumes: list[torch.Tensor], which: list[int]) -> torch.Tensor:
        """``t_w`` of window ``which[i]`` on padded volume ``volumes[i]`` (float64)."""
        out = torch.empty(len(which), dtype=torch.float64, device=self.x.device)
        for k in range(0, len(which), self.sw_batch_size):
            chunk = range(k, min(k + self.sw_batch_size, len(which)))
            patches = []
            for i in chunk:
                start = self.starts[which[i]]
                sl = tuple(slice(s, s + r) for s, r in zip(start, self.grid.roi, strict=True))
                patches.append(volumes[i][(0, slice(None), *sl)])
            logits = self.network(torch.stack(patches))[:, self.channel].to(torch.float64)
            self.window_passes += len(patches)
            for j, i in enumerate(chunk):
                out[i] = (logits[j] * self.weights[which[i]]).sum()
        return out

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        scores = []
        with torch.no_grad():
            for crop in crops:
                changed = (crop != self.crop[0]).any(dim=0)
                redo = list(range(self.active)) if not self.cache else [
                    w for w, sl in enumerate(self.overlaps)
                    if sl is not None and bool(changed[sl].any())]
                terms = self.terms.clone()
                if redo:
                    # the sample written into one working copy of the volume and taken out
                    # again: a copy of the box per sample, not of the whole volume
                    if self._work is None:
                        self._work = self.x.clone()
                    box = (0, slice(None), *self._padded_box())
                    self._work[box] = crop
                    try:
                        terms[redo] = self._terms([self._work] * len(redo), redo)
                    finally:
                        self._work[box] = self.x[box]
                scores.append(terms.sum())
        return torch.stack(scores).to(crops.dtype)

    def _padded_box(self) -> tuple[slice, ...]:
        return tuple(slice(b.start + p, b.stop + p)
                     for b, p in zip(self.box, self.grid.before, strict=True))


def kernel_shap_captum(forward: Any, x: torch.Tensor, baseline: float, target: int | None,
                       mask: torch.Tensor, samples: int, batch_size: int) -> torch.Tensor:
    """Captum's ``KernelShap`` of ``forward`` at ``x`` over the features of ``mask`` (the
    :data:`~napari_xaimed.attribution.methods.METHODS` entry ``kernel_shap``, whole volume,
    no window cache)."""
    from captum.attr import KernelShap

    _check_features(int(torch.unique(mask).numel()))
    with torch.no_grad():
        return KernelShap(forward).attribute(
            x.detach(), baselines=baseline, target=target, feature_mask=mask,
            n_samples=int(samples), perturbations_per_eval=int(batch_size))


def _check_features(n: int) -> None:
    if n < 2:
        raise XaimedError(f"KernelSHAP needs at least two supervoxels, the volume gave {n} "
                          "(SLIC finds few on a volume of near-uniform texture): ask for more "
                          "supervoxels or use kernel_shap_windows with kind='grid'.")


def grid_supervoxels(shape: Sequence[int], n: int) -> np.ndarray:
    """A regular grid of about ``n`` cubic blocks over ``shape`` (labels from 0)."""
    side = max(1, math.ceil((float(np.prod(shape)) / max(1, int(n))) ** (1 / 3)))
    index = [np.arange(s) // side for s in shape]
    counts = [int(i.max()) + 1 for i in index]
    return (index[0][:, None, None] * counts[1] * counts[2]
            + index[1][None, :, None] * counts[2] + index[2][None, None, :]).astype(np.int64)


def region_box(region: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of a mask, grown by ``margin`` voxels and cut to the volume."""
    coords = np.nonzero(region)
    if not coords[0].size:
        raise XaimedError("the region is empty: draw or pick a non-empty mask to explain.")
    return tuple(slice(max(0, int(c.min()) - margin), min(n, int(c.max()) + margin + 1))
                 for c, n in zip(coords, region.shape, strict=True))


@dataclass
class KernelShapResult:
    """KernelSHAP values on the volume's grid (0 outside the box) and what they cost.

    ``window_passes`` counts windows run through the network; ``seconds`` the wall time.
    """

    map: np.ndarray
    feature_mask: np.ndarray
    box: tuple[slice, ...]
    window_passes: int
    windows: int
    active_windows: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)


def kernel_shap_windows(network: torch.nn.Module, volume: Any, region: Any, *,
                        roi_size: Sequence[int], channel: int = 1, overlap: float = 0.25,
                        mode: str = "constant", margin: int = 4, supervoxels: int = 64,
                        kind: str = "grid", samples: int = 64, baseline: float = 0.0,
                        seed: int = 0, batch_size: int = 8, sw_batch_size: int = 4,
                        cache: bool = True) -> KernelShapResult:
    """KernelSHAP of a sliding-window segmentation score over supervoxels around a region.

    Parameters
    ----------
    network : torch.nn.Module
        The window network, ``(b, C, *roi) -> (b, K, *roi)``, in eval mode.
    volume : array_like or torch.Tensor
        ``(z, y, x)`` or ``(1, C, z, y, x)``, already scaled as the network expects.
    region : array_like of bool
        The region ``R`` whose summed ``channel`` output is explained, ``(z, y, x)``.
    roi_size, overlap, mode
        MONAI's ``sliding_window_inference`` settings (``mode``: constant or gaussian).
    margin : int
        Voxels added around the region's bounding box: the box whose supervoxels are
        perturbed (the rest of the volume stays as it is).
    supervoxels, kind
        About how many supervoxels tile the box: ``"grid"`` (cubic blocks) or ``"slic"``.
    samples, baseline, seed, batch_size
        Captum ``KernelShap``'s ``n_samples``, the value a removed supervoxel takes, the
        torch seed of its sampling, and its ``perturbations_per_eval``.
    cache : bool
        Rerun only the windows a perturbation touches (False: every window reaching the
        region, for every sample).
    """
    from captum.attr import KernelShap

    started = time.perf_counter()
    x = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
    if x.ndim == 3:
        x = x[None, None]
    if x.ndim != 5 or x.shape[0] != 1:
        raise XaimedError(f"the volume must be (z, y, x) or (1, C, z, y, x), got "
                          f"{tuple(x.shape)}.")
    mask = np.asarray(region).astype(bool)
    if mask.shape != tuple(x.shape[2:]):
        raise XaimedError(f"the region {mask.shape} must have the volume's shape "
                          f"{tuple(x.shape[2:])}.")
    if kind not in ("grid", "slic"):
        raise XaimedError(f"kind must be 'grid' or 'slic', got {kind!r}.")
    if int(samples) < 2:
        raise XaimedError(f"samples must be at least 2 (KernelSHAP's first two are all and "
                          f"none), got {samples}.")
    box = region_box(mask, int(margin))
    score = CachedWindowScore(network, x, torch.as_tensor(mask, device=x.device), channel,
                              roi_size, box, overlap=overlap, mode=mode,
                              sw_batch_size=sw_batch_size, cache=cache)
    crop = score.crop
    if kind == "grid":
        features = grid_supervoxels(crop.shape[2:], supervoxels)
    else:
        from napari_xaimed.attribution.supervoxels import supervoxels as slic

        features = slic(crop[0, 0].cpu().numpy(), supervoxels)
    _check_features(int(np.unique(features).size))
    feature_mask = torch.as_tensor(features, device=x.device)[None, None].expand_as(crop)
    # Captum's KernelShap draws its coalitions from torch's process-wide generator: seeded
    # under the lock other jobs' draws respect (napari_xaimed._core.rng)
    with seeded(int(seed), x.device):
        values = KernelShap(score).attribute(crop, baselines=float(baseline),
                                             feature_mask=feature_mask,
                                             n_samples=int(samples),
                                             perturbations_per_eval=int(batch_size))
    full = np.zeros(mask.shape, dtype=np.float64)
    full[box] = values[0].sum(dim=0).detach().cpu().numpy()
    return KernelShapResult(full, features, box, score.window_passes, score.windows,
                            score.active, time.perf_counter() - started,
                            {"roi_size": list(roi_size), "channel": channel, "overlap": overlap,
                             "mode": mode, "margin": margin, "supervoxels": supervoxels,
                             "kind": kind, "samples": samples, "baseline": baseline,
                             "seed": seed, "cache": cache})
