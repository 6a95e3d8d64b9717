"""The attribution methods: Captum where it implements them, our batched occlusion otherwise.

Each entry of :data:`METHODS` says whether its maps are signed and which parameters it takes.
:func:`run_method` is a step generator: it yields progress and returns the attribution
``(1, C, z, y, x)`` on the model's input grid.

LRP's rules for 3D layers: :mod:`~napari_xaimed.attribution.lrp`; the baselines:
:mod:`~napari_xaimed.attribution.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed._core.rng import draws_globally, isolated_steps
from napari_xaimed._core.stepped import stepped
from napari_xaimed.attribution.baselines import (  # noqa: F401 - also importable from here, as before
    BASELINES,
    _scalar_baseline,
    _triple,
    baseline_tensor,
)
from napari_xaimed.attribution.cams import CAMS, cam_steps
from napari_xaimed.attribution.incremental import incremental_occlusion_steps, split_model
from napari_xaimed.attribution.lrp import (  # noqa: F401 - also importable from here, as before
    LRP_DRIFT,
    LRP_EPSILON_TYPES,
    LRP_PASS_TYPES_NAMES,
    _check_conservation,
    _lrp_ready,
)
from napari_xaimed.attribution.noise import gradient_shap, noise_tunnel
from napari_xaimed.attribution.occlusion import occlusion_steps
from napari_xaimed.attribution.supervoxels import supervoxels
from napari_xaimed.models.device import halved_batch


@dataclass(frozen=True)
class Method:
    """An attribution method: its sign convention, parameters (with defaults) and passes."""

    name: str
    signed: bool
    params: dict[str, Any]
    description: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("saliency", False, {}, "|gradient| of the target (Captum Saliency)"),
    Method("input_x_gradient", True, {}, "input x gradient (Captum InputXGradient)"),
    Method("integrated_gradients", True, {"steps": 32, "baseline": "zeros"},
           "Integrated Gradients; baseline zeros, min or blurred (Captum)"),
    Method("smoothgrad", False, {"samples": 16, "noise": 0.1},
           "mean |gradient| over noisy copies; noise as a fraction of the intensity range"),
    Method("smoothgrad_sq", False, {"samples": 16, "noise": 0.1},
           "mean squared gradient over noisy copies (Captum NoiseTunnel's definition)"),
    Method("vargrad", False, {"samples": 16, "noise": 0.1},
           "variance of |gradient| over noisy copies (Captum NoiseTunnel's definition)"),
    Method("guided_backprop", True, {}, "guided backpropagation (Captum; needs nn.ReLU)"),
    Method("deeplift", True, {"baseline": "zeros"}, "DeepLift (Captum)"),
    Method("gradient_shap", True, {"samples": 16, "noise": 0.1, "baseline": "zeros"},
           "GradientSHAP: Captum's, its samples batched with progress per pass"),
    Method("gradcam", False, {"layer": None}, "Grad-CAM on a layer (default: the last spatial "
           "feature map), upsampled trilinearly (Captum LayerGradCam)"),
    Method("guided_gradcam", True, {"layer": None}, "Guided Grad-CAM (Captum)"),
    *(Method(name, False, dict(params), text) for name, (params, text) in CAMS.items()),
    Method("lrp", True, {}, "layer-wise relevance propagation, epsilon rule (Captum LRP)"),
    Method("occlusion", True, {"window": 8, "stride": 8, "unit": "voxels",
                               "baseline": "zeros", "incremental": True},
           "score drop when a 3D window is set to the baseline (batched; incremental: only "
           "the layers the window changes are recomputed, when the model allows it)"),
    Method("feature_ablation", True, {"supervoxels": 200, "baseline": "zeros"},
           "score drop per SLIC supervoxel set to the baseline (Captum's FeatureAblation, "
           "batched with progress)"),
    Method("shapley", True, {"supervoxels": 64, "samples": 8, "baseline": "zeros"},
           "Shapley value sampling over SLIC supervoxels (Captum)"),
    Method("kernel_shap", True, {"supervoxels": 64, "samples": 64, "baseline": "zeros"},
           "KernelSHAP over SLIC supervoxels (Captum KernelShap; sliding windows with a cache: "
           "kernel_shap.kernel_shap_windows)"),
)}


# One gradient pass whose forward is the plain model's: the run's probe pass can be that
# forward (see :class:`Primed`) instead of an extra one. The CAMs take their layer's output
# (and the score) from it, the gradient-free ones from a probe run without gradients.
PRIMABLE = ("saliency", "input_x_gradient", "gradcam", *CAMS)


#: Methods that weigh the channels of one layer (``layer`` parameter, default the last
#: spatial feature map).
CAM_LAYER_METHODS = ("gradcam", "guided_gradcam", *CAMS)


@dataclass
class Primed:
    """A forward pass already made with gradients on: the input ``x`` (requires grad), the
    model's output on it, and for Grad-CAM the layer's output in that pass. A single-pass
    method backpropagates from it instead of running the model again (the same graph, so the
    same numbers as its own forward would give)."""

    x: torch.Tensor
    output: torch.Tensor
    layer: torch.nn.Module | None = None
    layer_output: torch.Tensor | None = None
    layer_name: str | None = None
    used: bool = False

    def forward(self, forward: Callable[[torch.Tensor], torch.Tensor]
                ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward``, except that its first call on ``x`` itself returns the saved output."""
        def replay(inputs: torch.Tensor) -> torch.Tensor:
            if not self.used and inputs is self.x:
                self.used = True
                return self.output
            return forward(inputs)
        return replay

    def take(self) -> bool:
        """Whether the saved pass is still unused (and now taken)."""
        fresh, self.used = not self.used, True
        return fresh


def check_params(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The method's parameters with defaults filled in; unknown names refused."""
    if method not in METHODS:
        raise XaimedError(f"unknown method {method!r}: choose from {', '.join(METHODS)}.")
    spec = METHODS[method].params
    extra = set(params) - set(spec) - {"batch_size", "model_spacing"}
    if extra:
        raise XaimedError(f"{method} takes {sorted(spec) or 'no parameters'}, not "
                          f"{sorted(extra)}.")
    out = {**spec, **params}
    if "baseline" in out and not isinstance(out["baseline"], int | float) \
            and out["baseline"] not in BASELINES:
        raise XaimedError(f"baseline must be a number or one of {BASELINES}, got "
                          f"{out['baseline']!r}.")
    if out.get("unit", "voxels") not in ("voxels", "mm"):
        raise XaimedError(f"unit must be 'voxels' or 'mm', got {out['unit']!r}.")
    for key in ("steps", "samples", "supervoxels"):
        if key in out and int(out[key]) < 1:
            raise XaimedError(f"{key} must be at least 1, got {out[key]}.")
    if out.get("channels") is not None and int(out["channels"]) < 1:
        raise XaimedError(f"channels must be at least 1 (or None for all), got "
                          f"{out['channels']}.")
    if "noise" in out and not float(out["noise"]) >= 0:
        raise XaimedError(f"noise must be >= 0 (a fraction of the intensity range), got "
                          f"{out['noise']}.")
    return out


def run_method(method: str, model: torch.nn.Module, forward: Callable[[torch.Tensor],
               torch.Tensor], x: torch.Tensor, target: int | None, params: dict[str, Any],
               volume: np.ndarray | None, batch_size: int, seed: int = 0,
               primed: Primed | None = None) -> Steps[torch.Tensor]:
    """Attributions of ``x`` for ``target`` by ``method`` (see :data:`METHODS`).

    ``forward`` is the model as Captum sees it (scores ``(n, classes)``, or ``(n,)`` for a
    region target, where ``target`` is None); ``model`` is the module itself, for the methods
    that hook its layers. ``volume`` is the model's input as an array (scaled and resized),
    for the supervoxel methods (None for the others). ``primed``: a forward pass with
    gradients already made on ``x`` (methods in :data:`PRIMABLE`; ignored by the others).
    """
    yield Progress(0, 1, f"{method}: running")
    while True:
        try:
            # Our own draws come from generators of this run; anything the model or Captum
            # draws from the process-wide generators (dropout kept on) from a state of this
            # run's own, so a concurrent job cannot move the map (see napari_xaimed._core.rng).
            out = yield from isolated_steps(
                _run(method, model, forward, x, target, params, volume, batch_size, primed,
                     seed), seed, x.device, needed=draws_globally(method, model))
            break
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            # Captum's batched methods (IG steps, noise samples, ablations): halve and redo
            batch_size = halved_batch(exc, batch_size, x.device)
            yield Progress(0, 1, f"{method}: out of memory, retrying with batch {batch_size}")
    yield Progress(1, 1, f"{method}: done")
    return out.detach()


def _integrated_gradients(ca: Any, forward: Callable, x: torch.Tensor, target: int | None,
                          baseline: Any, steps: int, batch_size: int) -> Steps[torch.Tensor]:
    """Captum's Integrated Gradients, one batch of steps at a time so progress and cancel
    work between batches: what its ``internal_batch_size`` does inside one call (Gauss-Legendre
    steps; the attribution is a weighted sum over steps, so the batches add up)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    ig = ca.IntegratedGradients(forward)
    sizes_fn, alphas_fn = approximation_parameters("gausslegendre")
    sizes, alphas = sizes_fn(steps), alphas_fn(steps)
    base = baseline if isinstance(baseline, torch.Tensor) else torch.full_like(x, baseline)
    total = None
    for start in range(0, steps, batch_size):
        stop = min(start + batch_size, steps)
        part = ig._attribute((x,), (base,), target=target, n_steps=stop - start,
                             step_sizes_and_alphas=(sizes[start:stop], alphas[start:stop]))[0]
        total = part if total is None else total + part
        yield Progress(stop, steps, f"integrated_gradients: {stop} of {steps} steps")
    return total


def _ablation(forward: Callable, x: torch.Tensor, target: int | None, labels: torch.Tensor,
              baseline: float, batch_size: int) -> Steps[torch.Tensor]:
    """Feature ablation over a label map (Captum's ``FeatureAblation`` definition: each
    voxel gets its feature's ``f(x) - f(x with the feature set to the baseline)``), batched with
    progress per batch."""
    def score(batch: torch.Tensor) -> torch.Tensor:
        out = forward(batch)
        return (out if target is None else out[:, target]).reshape(-1).double()

    ids = torch.unique(labels)
    with torch.no_grad():
        reference = score(x)[0]
    diffs = torch.zeros(int(ids.max()) + 1, dtype=torch.float64, device=x.device)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        batch = x.repeat(len(chunk), 1, 1, 1, 1)
        for i, feature in enumerate(chunk):
            batch[i, :, labels == feature] = baseline
        with torch.no_grad():
            diffs[chunk] = reference - score(batch)
        done = min(start + batch_size, len(ids))
        yield Progress(done, len(ids), f"feature_ablation: {done} of {len(ids)} supervoxels")
    return diffs[labels.long()][None, None].to(x.dtype)


def _primed_gradcam(primed: Primed, target: int | None) -> torch.Tensor:
    """Captum's ``LayerGradCam`` (ReLU on, channels summed) from a pass already made: the
    target's gradient with respect to the layer's output, averaged over space, weights the
    layer's channels."""
    from captum._utils.common import _select_targets

    with torch.autograd.set_grad_enabled(True):
        scores = _select_targets(primed.output, target)
        acts = primed.layer_output
        grads = torch.autograd.grad(torch.unbind(scores), (acts,))[0]
    with torch.no_grad():
        weights = torch.mean(grads, dim=tuple(range(2, grads.ndim)), keepdim=True) \
            if grads.ndim > 2 else grads
        return F.relu(torch.sum(weights * acts.detach(), dim=1, keepdim=True))


def _run(method: str, model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor],
         x: torch.Tensor, target: int | None, params: dict[str, Any], volume: np.ndarray | None,
         batch_size: int, primed: Primed | None = None, seed: int = 0) -> Steps[torch.Tensor]:
    import captum.attr as ca

    plain = forward
    if method in CAMS:  # the CAM family (attribution/cams.py) takes the probe pass itself
        passes = params.setdefault("passes", {})
        return (yield from cam_steps(method, forward, params["cam_layer"], x, target,
                                     batch_size, primed, passes, params.get("channels")))
    if method in PRIMABLE and primed is not None and not primed.used:
        x, forward = primed.x, primed.forward(forward)  # Captum backpropagates from it
    else:
        x, primed = x.detach().clone().requires_grad_(True), None
    p = params
    if method == "saliency":
        out = ca.Saliency(forward).attribute(x, target=target, abs=True)
    elif method == "input_x_gradient":
        out = ca.InputXGradient(forward).attribute(x, target=target)
    elif method == "integrated_gradients":
        out = yield from _integrated_gradients(ca, forward, x, target,
                                               baseline_tensor(x, p["baseline"]),
                                               int(p["steps"]), batch_size)
    elif method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        out = yield from noise_tunnel(forward, x, target, method, int(p["samples"]),
                                      float(p["noise"]), batch_size, seed)
    elif method == "guided_backprop":
        out = ca.GuidedBackprop(model).attribute(x, target=target)
    elif method == "deeplift":
        out = ca.DeepLift(model).attribute(x, baselines=baseline_tensor(x, p["baseline"]),
                                           target=target)
    elif method == "gradient_shap":
        base = baseline_tensor(x, p["baseline"])
        base = base if isinstance(base, torch.Tensor) else torch.full_like(x, base)
        out = yield from gradient_shap(forward, x, target, base, int(p["samples"]),
                                       float(p["noise"]), batch_size, seed)
    elif method in ("gradcam", "guided_gradcam"):
        layer = p["cam_layer"]  # resolved by the caller (see network.cam_layer)
        if method == "gradcam":
            if primed is not None and primed.layer is layer and \
                    primed.layer_output is not None and primed.take():
                cam = _primed_gradcam(primed, target)
            else:
                cam = ca.LayerGradCam(plain, layer).attribute(x, target=target,
                                                              relu_attributions=True)
            out = F.interpolate(cam, size=tuple(x.shape[2:]), mode="trilinear",
                                align_corners=False)
        else:
            out = ca.GuidedGradCam(model, layer).attribute(x, target=target,
                                                           interpolate_mode="trilinear")
    elif method == "lrp":
        out, delta = ca.LRP(_lrp_ready(model)).attribute(x, target=target,
                                                          return_convergence_delta=True)
        _check_conservation(out, delta)
    elif method == "occlusion":
        if p["unit"] == "mm":  # to voxels of the model's input grid
            grid = p["model_spacing"]
            window = tuple(max(1, round(w / g)) for w, g in
                           zip(_triple(p["window"], "window", float), grid, strict=True))
            stride = tuple(max(1, round(s / g)) for s, g in
                           zip(_triple(p["stride"], "stride", float), grid, strict=True))
        else:
            window = _triple(p["window"], "window")
            stride = _triple(p["stride"], "stride")

        def pick(scores: torch.Tensor) -> torch.Tensor:
            return scores if target is None else scores[:, target]

        baseline = _scalar_baseline(x, p["baseline"])
        # the split needs the plain model (not a mixed-precision wrapper around it)
        split = split_model(model, x.detach()) if p["incremental"] and forward is model \
            else None
        if split is not None:
            out = yield from incremental_occlusion_steps(split, pick, x.detach(), window,
                                                         stride, baseline, batch_size)
        else:
            out = yield from occlusion_steps(lambda batch: pick(forward(batch)), x.detach(),
                                             window, stride, baseline, batch_size)
    elif method in ("feature_ablation", "shapley", "kernel_shap"):
        mask = torch.from_numpy(supervoxels(volume, p["supervoxels"])).to(x.device)
        mask = mask[None, None].expand_as(x)
        base = _scalar_baseline(x, p["baseline"])
        if method == "feature_ablation":
            out = yield from _ablation(forward, x.detach(), target, mask[0, 0], base,
                                       batch_size)
        elif method == "kernel_shap":  # one Captum call: one pass per sample
            from napari_xaimed.attribution.kernel_shap import kernel_shap_captum

            out = yield from stepped(lambda fwd: kernel_shap_captum(
                fwd, x, base, target, mask, int(p["samples"]), batch_size),
                forward, int(p["samples"]), method)
        else:  # Shapley sampling: one Captum call, stepped per batch of perturbations
            features = int(torch.unique(mask).numel())

            orders = torch.Generator().manual_seed(seed)  # Captum draws on the CPU

            def shapley(fwd: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
                sampling = ca.ShapleyValueSampling(fwd)
                # Captum's permutations (torch.randperm per sample), from this run's generator
                sampling.permutation_generator = lambda n, k: (
                    torch.randperm(n, generator=orders).tolist() for _ in range(k))
                with torch.no_grad():
                    return sampling.attribute(
                        x.detach(), baselines=base, target=target, feature_mask=mask,
                        n_samples=int(p["samples"]), perturbations_per_eval=batch_size)

            # Captum evaluates the input once, then one perturbation per feature per sample
            out = yield from stepped(shapley, forward, 1 + int(p["samples"]) * features,
                                     method)
    else:  # pragma: no cover - check_params refuses unknown names first
        raise XaimedError(f"unknown method {method!r}")
    return out
