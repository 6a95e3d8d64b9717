"""The feature level of a longitudinal explanation (:mod:`~napari_xaimed.longitudinal.explain`):
the image-level displacement resampled onto a layer's feature grid (millimetres stay
millimetres), the prior's feature maps warped onto the current's, and their difference explained
Grad-CAM-style with the gradients of the current's score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution.hooked import refuse_scripted
from napari_xaimed.models.loading import LoadedModel, Scores
from napari_xaimed.models.network import cam_layer, record_calls
from napari_xaimed.models.preprocess import Preprocessing, to_input, to_volume_grid
from napari_xaimed.registration.fields import check_field, moving_index

Vec3 = tuple[float, float, float]


def feature_grid(shape: tuple[int, ...], feature_shape: tuple[int, ...], spacing: Vec3,
                 origin: Vec3 = (0.0, 0.0, 0.0)) -> tuple[Vec3, Vec3]:
    """Voxel size and origin (mm) of a feature map of ``feature_shape`` computed from a volume
    of ``shape`` on a grid of ``spacing`` and ``origin``.

    The shrink factor per axis is ``shape / feature_shape``; a feature voxel covers that many
    image voxels, so its size is ``spacing * factor`` and the centre of feature voxel 0 lies at
    ``origin + (factor - 1) / 2 * spacing`` (the centres of a resize with
    ``align_corners=False`` and of strided pooling).
    """
    factor = np.asarray(shape[-3:], float) / np.asarray(feature_shape[-3:], float)
    sp = np.asarray(spacing, float)
    f_spacing = tuple(float(v) for v in sp * factor)
    f_origin = tuple(float(v) for v in np.asarray(origin, float) + (factor - 1.0) / 2.0 * sp)
    return f_spacing, f_origin  # type: ignore[return-value]


def field_on_grid(displacement: np.ndarray, spacing: Vec3, origin: Vec3,
                  shape: tuple[int, int, int], grid_spacing: Vec3, grid_origin: Vec3
                  ) -> np.ndarray:
    """A displacement field (mm, on the grid of ``spacing``, ``origin``) sampled at the voxel
    centres of another grid (``shape``, ``grid_spacing``, ``grid_origin``), linearly, with the
    edge values beyond the field's grid. Values stay in mm: a constant shift stays the same
    shift. Returns float32 ``(*shape, 3)``."""
    field_ = check_field(displacement)
    idx = moving_index(None, shape, slice(0, shape[0]), grid_spacing, grid_origin, spacing,
                       origin)
    out = np.empty((*shape, 3), np.float32)
    for axis in range(3):
        out[..., axis] = ndi.map_coordinates(field_[..., axis].astype(np.float64), idx, order=1,
                                             mode="nearest")
    return out


def warp_features(features: np.ndarray, displacement: np.ndarray, *, spacing: Vec3,
                  origin: Vec3, moving_spacing: Vec3, moving_origin: Vec3) -> np.ndarray:
    """Feature maps ``(channels, z, y, x)`` of the moving (prior) scan pulled onto the fixed
    feature grid through ``displacement`` (mm, on that fixed grid): fixed voxel ``q`` takes
    the moving features at ``q + u(q)``, linearly, with the edge values beyond the moving
    grid (features have no "outside" value). Returns float32 ``(channels, *displacement
    grid)``."""
    features = np.asarray(features, np.float32)
    field_ = check_field(displacement)
    shape = field_.shape[:3]
    idx = moving_index(field_, shape, slice(0, shape[0]), spacing, origin, moving_spacing,
                       moving_origin)
    return np.stack([ndi.map_coordinates(channel, idx, order=1, mode="nearest")
                     for channel in features]).astype(np.float32)


def _features(module: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor,
              grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's first output and the model's scores in one pass on ``x``."""
    captured: list[torch.Tensor] = []

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        if not captured and isinstance(output, torch.Tensor):
            captured.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            out = module(x.requires_grad_(True) if grad else x)
    finally:
        handle.remove()
    if not captured or captured[0].ndim != 5:
        raise XaimedError("the feature layer gave no 5D feature map (batch, channels, z, y, x) "
                          "for this input: name another layer (layer='...').")
    return captured[0], out


def _score(out: torch.Tensor, target: int | None) -> torch.Tensor:
    """The explained score: a class's logit, or a segmentation channel's summed logit where
    the model predicts that channel."""
    if out.ndim == 2:
        return out[0, int(target if target is not None else out[0].argmax())]
    channel = 1 if target is None and out.shape[1] > 1 else int(target or 0)
    mask = (out.argmax(dim=1)[0] == channel) if out.shape[1] > 1 else (out[0, 0] > 0)
    return (out[0, channel] * mask.float()).sum()


def _feature_change(loaded: LoadedModel, prep: Preprocessing, dev: torch.device,
                    prior: np.ndarray, current: np.ndarray, layer: str | None,
                    target: int | None, geometry: dict[str, Any]) -> dict[str, Any]:
    network = loaded.module.to(dev).eval()
    refuse_scripted("gradcam", network)
    module = Scores(network)
    xc, xp = to_input(current, prep, dev), to_input(prior, prep, dev)
    name, hooked = cam_layer(record_calls(network, xc, module), layer,
                             dict(network.named_modules()))
    feats_c, out = _features(module, hooked, xc, grad=True)
    grads = torch.autograd.grad(_score(out, target), feats_c, allow_unused=True)[0]
    if grads is None:
        raise XaimedError(f"the score does not depend on layer {name!r}: name another layer.")
    weights = grads.detach().mean(dim=(2, 3, 4))[0].float().cpu().numpy()
    with torch.no_grad():
        feats_p = _features(module, hooked, xp, grad=False)[0]
    a_c = feats_c.detach()[0].float().cpu().numpy()
    a_p = feats_p.detach()[0].float().cpu().numpy()
    f_sp, f_or = feature_grid(current.shape, a_c.shape, geometry["spacing"], geometry["origin"])
    p_sp, p_or = feature_grid(prior.shape, a_p.shape, geometry["prior_spacing"],
                              geometry["prior_origin"])
    u_f = (np.zeros((*a_c.shape[1:], 3), np.float32) if geometry["displacement"] is None
           else field_on_grid(geometry["displacement"], geometry["spacing"], geometry["origin"],
                              a_c.shape[1:], f_sp, f_or))
    difference = a_c - warp_features(a_p, u_f, spacing=f_sp, origin=f_or, moving_spacing=p_sp,
                                     moving_origin=p_or)
    weighted = np.tensordot(weights, difference, axes=1).astype(np.float32)
    return {"map": to_volume_grid(torch.from_numpy(weighted)[None, None], current.shape),
            "channel_change": np.sqrt((difference.astype(np.float64) ** 2).sum(axis=(1, 2, 3))
                                      ).astype(np.float32),
            "weights": weights.astype(np.float32), "field": u_f, "layer": name,
            "spacing": f_sp, "origin": f_or, "feature_shape": tuple(a_c.shape)}
