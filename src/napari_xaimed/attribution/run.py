"""Explain a model's decision on a volume: checks, target, method, map back to the volume."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.rng import model_draws, seeded_call
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.attribution.cams import CAMS, FORWARD_CAMS
from napari_xaimed.attribution.hooked import HOOKED, PER_CALL, refuse_scripted
from napari_xaimed.attribution.methods import (
    CAM_LAYER_METHODS,
    METHODS,
    PRIMABLE,
    Primed,
    check_params,
    run_method,
)
from napari_xaimed.attribution.result import Attribution
from napari_xaimed.models.device import auto_batch, forward_error, pick_device
from napari_xaimed.models.domain import warn_outside
from napari_xaimed.models.loading import LoadedModel, Scores, load_model
from napari_xaimed.models.network import (
    cam_layer,
    record_calls,
    recording,
    submodule,
    untangled,
)
from napari_xaimed.models.preprocess import Preprocessing, to_input
from napari_xaimed.models.preprocess import to_volume_grid as _to_grid

AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


class RegionScore(torch.nn.Module):
    """A segmentation model seen as one score per volume: the summed logit of ``channel``
    inside ``region`` (a mask on the model's output grid)."""

    draws_random = False  # it only calls its children (see napari_xaimed._core.rng)

    def __init__(self, model: torch.nn.Module, channel: int, region: torch.Tensor):
        super().__init__()
        self.model, self.channel = model, channel
        self.register_buffer("region", region.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)[:, self.channel]
        return (out * self.region).flatten(1).sum(dim=1)


class _Autocast(torch.nn.Module):
    draws_random = False  # it only calls its children (see napari_xaimed._core.rng)

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.model, self.device_type, self.dtype = model, device.type, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.model(x).float()


def _probe(module: torch.nn.Module, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The model's output on ``x``, checked; ``grad``: with the graph kept (``x`` must then
    require grad), for a single-pass method to backpropagate from."""
    try:
        with torch.set_grad_enabled(grad):
            out = module(x)
    except Exception as exc:  # noqa: BLE001 - out of memory, or an input that does not fit
        raise forward_error(exc, x) from exc
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 5) or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise XaimedError(
            f"the model's output {shape} is neither class scores (batch, classes) nor a "
            "segmentation (batch, channels, z, y, x): napari-xaimed can explain those two."
        )
    return out


def _primed_probe(module: torch.nn.Module, network: torch.nn.Module, x: torch.Tensor,
                  method: str, params: dict[str, Any], seed: int) -> Steps[Primed]:
    """The probe pass with gradients on, kept for ``method`` (one of ``PRIMABLE``); for the CAM
    methods with the layer chosen in that pass
    (:func:`~napari_xaimed.models.network.cam_layer`) and its output there, and without
    gradients for the CAMs that need none. ``module`` runs ``network`` (the user's model). Run
    under the seed :func:`run_method` gives the method's own pass, so a stochastic model
    (dropout kept on) draws what it would there."""
    xg = x.detach().clone().requires_grad_(True)
    cam = method in CAM_LAYER_METHODS

    def probe() -> tuple[torch.Tensor, Any]:
        with recording(network, keep=True) if cam else _nothing() as record:
            return _probe(module, xg, grad=method not in FORWARD_CAMS), record

    out, record = yield from seeded_call(probe, seed, x.device, needed=model_draws(module))
    if record is None:
        return Primed(xg, out)
    name, layer = cam_layer(record, params["layer"], dict(network.named_modules()))
    call = record.calls.get(id(layer))
    # a layer used once, with one tensor out: Grad-CAM can start from it
    layer_output = call.value if call is not None and call.calls == 1 else None
    return Primed(xg, out, layer, layer_output, layer_name=name)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: Any) -> None:
        return None


def _hook_ready(method: str, run_model: torch.nn.Module, network: torch.nn.Module,
                x: torch.Tensor, primed: Primed | None, layer: str | None,
                chosen_layers: dict[tuple[Any, ...], str]
                ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The model a hook-based method runs on, and for the CAM methods the layer module (for
    :func:`run_method`) and what was chosen (for the record).

    A model that calls a module twice per pass gets one copy per call
    (:func:`~napari_xaimed.models.network.untangled`); Grad-CAM's layer defaults to the
    last spatial feature map of a pass on this input, remembered in ``chosen_layers`` by input
    shape, device and the layer asked for (so a checked model needs no extra pass)."""
    chosen: dict[str, Any] = {}
    name = None
    if method in CAM_LAYER_METHODS:
        key = (tuple(x.shape), str(x.device), layer)
        if primed is not None and primed.layer_name is not None:
            name = primed.layer_name
        elif key in chosen_layers:
            name = chosen_layers[key]
        else:
            record = record_calls(network, x, run_model)
            name = cam_layer(record, layer, dict(network.named_modules()))[0]
        chosen_layers[key] = name
        chosen = {"layer": name}
        if layer is None:
            chosen["layer_choice"] = "default: the model's last spatial feature map"
    # where the user's network sits inside the model that runs (RegionScore, Scores)
    prefix = next(n for n, m in run_model.named_modules() if m is network)
    if method in PER_CALL:
        run_model = untangled(run_model, record_calls(run_model, x))
    extra = {}
    if name is not None:
        extra["cam_layer"] = submodule(run_model, ".".join(p for p in (prefix, name) if p))
    return run_model, extra, chosen


def _region_on(mask: np.ndarray, size: tuple[int, ...], device: torch.device) -> torch.Tensor:
    region = torch.from_numpy(np.ascontiguousarray(mask != 0)).float()[None, None]
    if tuple(region.shape[2:]) != tuple(size):
        region = torch.nn.functional.interpolate(region, size=tuple(size), mode="nearest")
    return region[0, 0].to(device)


def attribute_steps(
    model: Any,
    volume: np.ndarray,
    method: str = "integrated_gradients",
    *,
    target: int | None = None,
    region: np.ndarray | None = None,
    device: str | torch.device = "auto",
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    batch_size: int | None = None,
    autocast: str | None = None,
    seed: int = 0,
    spacing: Any = None,
    **params: Any,
) -> Steps[Attribution]:
    """Generator form of :func:`attribute` (yields progress, returns the attribution)."""
    # -- attention methods: handed whole to attribution/attention.py ---------------------------
    from napari_xaimed.attribution.attention import ATTENTION_METHODS, attention_map_steps

    if method in ATTENTION_METHODS:
        return (yield from attention_map_steps(
            model, volume, method, target=target, region=region, device=device,
            preprocessing=preprocessing, batch_size=batch_size, autocast=autocast, seed=seed,
            spacing=spacing, **check_params(method, params)))
    # ------------------------------------------------------------------------------------------
    started = time.perf_counter()
    volume = as_volume(volume, "volume")
    loaded: LoadedModel = load_model(model)
    from napari_xaimed.models.nnunet import NnUNetModel

    if isinstance(loaded, NnUNetModel):  # through nnU-Net's preprocessing and windows
        from napari_xaimed.attribution.nnunet_explain import nnunet_attribute_steps

        nn_only = {k: params.pop(k) for k in ("structure", "fold", "mirroring") if k in params}
        return (yield from nnunet_attribute_steps(
            loaded, volume, method, target=target, region=region, device=device,
            preprocessing=preprocessing, batch_size=batch_size, autocast=autocast, seed=seed,
            spacing=spacing, run_module=attribute_steps, **nn_only, **params))
    params = check_params(method, params)
    if autocast not in AUTOCAST:
        raise XaimedError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}.")
    prep = loaded.preprocessing.overridden(preprocessing)
    domain = warn_outside(loaded.training_inputs, volume, spacing, prep, repr(loaded.source))
    dev = pick_device(device)
    network = loaded.module.to(dev).eval()
    refuse_scripted(method, network)  # before any pass: the reason is the format, not the input
    module = Scores(network)
    x = to_input(volume, prep, dev)
    key = (tuple(x.shape), str(dev))
    captured: list[torch.Tensor] = []
    primed: Primed | None = None
    if target is not None and region is None and key in loaded.checked:
        # A classifier already checked on inputs of this shape, with a given target: no probe
        # pass (for one-pass methods it would cost a third of the time); the scores are
        # taken from the method's own forward pass on the input, or computed at the end.
        n_classes = loaded.checked[key]
        if not 0 <= int(target) < n_classes:
            raise XaimedError(f"target class {target} does not exist: the model has "
                              f"{n_classes} classes (0..{n_classes - 1}).")
        out = None
    else:
        yield Progress(0, 1, "checking the model on the volume")
        if method in PRIMABLE and autocast is None and region is None:
            # a single-pass gradient method: the check is its forward pass (graph kept), so
            # the model runs once, not twice
            primed = yield from _primed_probe(module, network, x, method, params, seed)
            out = primed.output
        else:  # seeded: a stochastic model's check repeats with its seed
            out = yield from seeded_call(lambda: _probe(module, x), seed, x.device,
                                         needed=model_draws(module))
        if out.ndim == 2:
            loaded.checked[key] = int(out.shape[1])
        elif primed is not None:  # a segmentation model: its score is another forward
            primed = None
        out = out.detach()
    region_info: dict[str, Any] = {}
    if out is not None and out.ndim == 5:  # segmentation: a channel's summed logit in a region
        channel = 1 if target is None and out.shape[1] > 1 else (target or 0)
        if not 0 <= channel < out.shape[1]:
            raise XaimedError(f"target channel {channel} does not exist: the model has "
                              f"{out.shape[1]} output channels.")
        if region is None:
            mask = (out.argmax(dim=1)[0] == channel) if out.shape[1] > 1 else (out[0, 0] > 0)
            if not bool(mask.any()):
                raise XaimedError(f"the model predicts no voxel of channel {channel} on this "
                                  "volume: give a region (a Labels layer) to explain.")
            region_t = mask.float()
            region_info = {"region": "model prediction"}
        else:
            if np.shape(region) != volume.shape:
                raise XaimedError(f"the region {np.shape(region)} must have the volume's shape "
                                  f"{volume.shape}.")
            if not np.any(region):
                raise XaimedError("the region is empty: draw or pick a non-empty mask.")
            region_t = _region_on(region, tuple(out.shape[2:]), dev)
            region_info = {"region": "given mask"}
        forward_module: torch.nn.Module = RegionScore(module, channel, region_t)
        # the score RegionScore gives, from the check's output: not another forward pass
        chosen, scores = None, [float((out[:, channel] * forward_module.region).flatten(1)
                                      .sum(dim=1).detach())]
        region_info["channel"] = channel
        segmentation = True
    else:
        segmentation = False
        if region is not None:
            raise XaimedError("a region applies to segmentation models; this model outputs "
                              "class scores: leave the region out.")
        if out is not None:
            n_classes = out.shape[1]
            chosen = int(out.argmax(dim=1)) if target is None else int(target)
            if not 0 <= chosen < n_classes:
                raise XaimedError(f"target class {chosen} does not exist: the model has "
                                  f"{n_classes} classes (0..{n_classes - 1}).")
            scores = [float(v) for v in out[0].detach().cpu()]
        else:
            chosen, scores = int(target), []  # type: ignore[arg-type]

            def capture(_module: Any, inputs: Any, output: Any) -> None:
                if not captured and inputs[0].shape == x.shape and torch.equal(
                        inputs[0].detach(), x):
                    captured.append(output.detach()[0])

        forward_module = module
    if autocast is not None:
        forward_module = _Autocast(forward_module, dev, AUTOCAST[autocast])
    batch = int(batch_size) if batch_size else auto_batch(x.numel(), dev)
    # the model's input as an array (scaled, resized): only the supervoxel methods need it
    scaled = (x[0, 0].detach().cpu().numpy()
              if method in ("feature_ablation", "shapley", "kernel_shap") else None)
    # voxel size of the model's input grid, for windows given in mm
    model_spacing = tuple(float(s) * n / m for s, n, m in
                          zip(as_spacing(spacing), volume.shape, x.shape[2:], strict=True))
    run_model, extra, layer_info = forward_module if segmentation else module, {}, {}
    if method in HOOKED:
        run_model, extra, layer_info = _hook_ready(method, run_model, network, x, primed,
                                                   params.get("layer"), loaded.cam_layers)
    hook = module.register_forward_hook(capture) if out is None else None
    run_params = {**params, "model_spacing": model_spacing, **extra}
    try:
        attribution = yield from run_method(method, run_model, forward_module, x, chosen,
                                            run_params, scaled, batch, seed=seed,
                                            primed=primed)
    except XaimedError:
        raise
    except Exception:
        if out is None and not captured:  # never probed: a failing model gets the probe's advice
            _probe(module, x)
        raise
    finally:
        primed = None  # the probe's graph, if a method did not use it
        if hook is not None:
            hook.remove()
    if out is None:
        if not captured:
            with torch.no_grad():
                captured.append(module(x).detach()[0])
        scores = [float(v) for v in captured[0].float().cpu()]
    if "passes" in run_params:  # what the map cost, in volumes through the network
        layer_info["passes"] = run_params["passes"]
    _check_map(attribution, method, layer_info.get("layer"))
    result_map = _to_grid(attribution, volume.shape)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return Attribution(
        map=result_map, method=method, signed=METHODS[method].signed,
        target=region_info["channel"] if segmentation else chosen,
        params={**params, **layer_info, "preprocessing": prep.to_dict(), "batch_size": batch,
                "autocast": autocast, "seed": seed, **region_info,
                "target": "predicted" if target is None else "given",
                **({"out_of_distribution": domain} if domain else {})},
        scores=scores, seconds=time.perf_counter() - started, device=str(dev),
        model=loaded.provenance())


#: Why a method's map can be zero everywhere, said when it is.
_ZERO_REASONS = {
    "gradcam": "the layer's gradient-weighted channels are negative everywhere, and Grad-CAM "
               "keeps only the positive part: the layer holds no evidence for this target. "
               "Name another layer (layer='...') or pick another method",
    "guided_gradcam": "Grad-CAM's part is zero everywhere on this layer: name another layer "
                      "(layer='...') or pick another method",
    **{cam: "the layer's weighted channels are negative everywhere, and the map keeps only the "
            "positive part: the layer holds no evidence for this target here. Name another "
            "layer (layer='...') or pick another method" for cam in CAMS},
    "occlusion": "no window changed the score: the model is insensitive to windows of this "
                 "size here; try larger windows or another method",
    "feature_ablation": "setting no supervoxel to the baseline changed the score; try more "
                        "supervoxels, another baseline or another method",
    "shapley": "no supervoxel changed the score; try more supervoxels, another baseline or "
               "another method",
    "kernel_shap": "no supervoxel changed the score in the samples drawn; try more samples, "
                   "more supervoxels, another baseline or another method",
}


def _check_map(attribution: torch.Tensor, method: str, layer: str | None = None) -> None:
    """Refuse a map with NaN or infinite values, or one that is zero everywhere, with the
    reason (and for Grad-CAM the layer), instead of showing a heatmap that says nothing."""
    finite = torch.isfinite(attribution)
    if not bool(finite.all()):
        raise XaimedError(
            f"{method} gave {int((~finite).sum())} NaN or infinite values on this model: its "
            "scores or gradients overflow here (a saturated output, or a half-precision "
            "autocast). Try autocast=None, another baseline or another method.")
    if not bool(attribution.any()):
        reason = _ZERO_REASONS.get(method, "the target's gradient is zero everywhere: the "
                                   "score does not change with the input here (saturated or "
                                   "dead activations, or a target the model ignores). Pick "
                                   "another target or a perturbation method (occlusion)")
        on = f" (layer {layer!r})" if layer else ""
        raise XaimedError(f"{method} gave a map of zeros on this volume{on}: {reason}.")


def attribute(model: Any, volume: np.ndarray, method: str = "integrated_gradients",
              **kwargs: Any) -> Attribution:
    """Explain ``model``'s decision on ``volume`` with ``method``.

    Parameters
    ----------
    model : torch.nn.Module, path, LoadedModel or "bundled"
        See :func:`~napari_xaimed.attribution.load_model`.
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    method : str
        One of :data:`~napari_xaimed.attribution.METHODS`.
    target : int, optional
        Classifier: the class to explain (default: the predicted one). Segmentation model: the
        output channel (default 1, or 0 with a single channel), explained as its summed logit
        inside ``region`` (default: where the model predicts that channel).
    region : numpy.ndarray, optional
        Mask on the volume's grid for a segmentation target.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``...
    preprocessing : dict, optional
        Overrides of the model's ``scaling``, ``window``, ``input_size``.
    batch_size : int, optional
        Volumes per forward pass for the batched methods (default: from free memory);
        out-of-memory halves it and retries.
    autocast : {None, "bf16", "fp16"}
        Mixed precision for the forward passes: faster on GPUs, but the rounding blurs small
        score differences (an occlusion window much smaller than the evidence).
    seed : int
        Seeds the noise of SmoothGrad, VarGrad and GradientSHAP.
    spacing : tuple of float, optional
        The volume's voxel size in mm, for occlusion windows given with ``unit="mm"``.
    **params
        The method's parameters (``METHODS[method].params``): ``steps``, ``baseline``,
        ``samples``, ``noise``, ``layer``, ``window``, ``stride``, ``unit`` (``"voxels"`` or
        ``"mm"``), ``incremental``, ``supervoxels``.

    Returns
    -------
    Attribution
    """
    return run_steps(attribute_steps(model, volume, method, **kwargs))
