"""The model as an attribution method runs it: a segmentation network seen as one region score
(:class:`RegionScore`), under autocast, the checked probe pass (kept with gradients for the
methods that can start from it), the model a hook-based method needs, and the region on the
model's output grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Steps
from napari_xaimed._core.rng import model_draws, seeded_call
from napari_xaimed.attribution.cams import FORWARD_CAMS
from napari_xaimed.attribution.hooked import PER_CALL
from napari_xaimed.attribution.methods import CAM_LAYER_METHODS, Primed
from napari_xaimed.models.device import forward_error
from napari_xaimed.models.network import cam_layer, record_calls, recording, submodule, untangled

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
