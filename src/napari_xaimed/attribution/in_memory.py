"""Attribution of a volume held in memory: the model loaded and checked, the target chosen,
the method run on the model's input and its map brought back to the volume's grid. The
public entry point is :func:`~napari_xaimed.attribution.attribute_steps`, which sends a dask
volume to :mod:`~napari_xaimed.attribution.lazy` instead.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed._core.rng import model_draws, seeded_call
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.attribution.hooked import HOOKED, refuse_scripted
from napari_xaimed.attribution.map_checks import _check_map
from napari_xaimed.attribution.methods import METHODS, PRIMABLE, Primed, check_params, run_method
from napari_xaimed.attribution.probe import (
    AUTOCAST,
    RegionScore,
    _Autocast,
    _hook_ready,
    _primed_probe,
    _probe,
    _region_on,
)
from napari_xaimed.attribution.result import Attribution
from napari_xaimed.models.device import auto_batch, pick_device
from napari_xaimed.models.domain import warn_outside
from napari_xaimed.models.loading import LoadedModel, Scores, load_model
from napari_xaimed.models.preprocess import Preprocessing, to_input
from napari_xaimed.models.preprocess import to_volume_grid as _to_grid


def attribute_in_memory_steps(
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
    """The in-memory path of :func:`~napari_xaimed.attribution.attribute_steps`: the volume
    whole, as numpy (yields progress, returns the attribution)."""
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
            spacing=spacing, run_module=attribute_in_memory_steps, **nn_only, **params))
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
