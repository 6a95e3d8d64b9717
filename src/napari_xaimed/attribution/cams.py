"""The class activation map (CAM) family beyond Grad-CAM, on 3D feature maps.

pytorch-grad-cam (``grad-cam`` 1.5.7) defines these for 2D images; most of its variants fail on
5D activations. Here each weighs a layer's channels ``A_k`` (sums over z, y and x) as that
package does, and is tested equal to its 2D formulas on a network that is 3D in form and 2D in
content:

- ``gradcam_pp`` (Grad-CAM++): ``alpha = g^2 / (2 g^2 + sum(A_k) g^3)`` (0 where ``g`` is),
  ``w_k = sum(alpha relu(g))``;
- ``xgradcam`` (XGrad-CAM): ``w_k = sum(g A_k) / sum(A_k)``;
- ``hirescam`` (HiResCAM): ``sum_k g A_k`` voxel by voxel, no averaging;
- ``layercam`` (LayerCAM): ``sum_k relu(g) A_k`` voxel by voxel;
- ``scorecam`` (Score-CAM): each channel, upsampled to the input and scaled to [0, 1], masks the
  input; ``w = softmax`` over the channels of the target's score on the masked inputs;
- ``ablationcam`` (Ablation-CAM): ``w_k = (y - y_k) / y``, ``y_k`` the score with channel ``k``
  of the layer's output set to zero;
- ``eigencam`` (Eigen-CAM): the activations (voxels x channels, centred) projected on their
  first principal component; it ignores the target.

``g`` is the target score's gradient with respect to ``A``. Every map is ``relu(sum_k w_k A_k)``
(or the voxel-wise sum), upsampled trilinearly to the model's input like Grad-CAM. Where this
differs from pytorch-grad-cam:

- maps keep their scale (pytorch-grad-cam scales each to [0, 1]);
- Eigen-CAM's sign: the SVD leaves it open, and pytorch-grad-cam's ``EigenCAM`` keeps whatever
  LAPACK returns; here the projection is flipped when ``|min| > |max|``, the correction the same
  package applies in Seg-Eigen-CAM (``get_2d_projection_with_sign_correction``);
- Ablation-CAM sets a channel to zero as the paper does (pytorch-grad-cam uses
  ``min - 1e7`` when the layer's output goes below zero);
- Score-CAM's masks are upsampled with ``align_corners=False``, as the maps are
  (pytorch-grad-cam's ``UpsamplingBilinear2d`` aligns corners); at the layer's own resolution
  the two agree.

Passes per map, in volumes through the network (``C`` the layer's channels): the four gradient
variants one forward and one backward (the model check's forward when it can be reused);
Eigen-CAM one forward; Score-CAM and Ablation-CAM ``1 + C`` forwards, the ``C`` in batches of
``batch_size`` volumes (an out-of-memory batch is halved and retried). Their ``channels``
parameter caps ``C`` for layers with many channels (1024 on DenseNet121): only the channels
with the largest mean activation are scored or ablated, the others weigh 0 (pytorch-grad-cam's
``ratio_channels_to_ablate`` likewise gives skipped channels weight 0, chosen another way).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed.models.device import halved_batch

_LAYER = {"layer": None}
_CHANNELS = {"layer": None, "channels": None}
#: name -> (parameters with defaults, description); registered in ``METHODS`` (unsigned maps).
CAMS: dict[str, tuple[dict[str, Any], str]] = {
    "gradcam_pp": (_LAYER, "Grad-CAM++: channels weighted by the positive gradients' "
                           "second-order weights (1 forward + 1 backward)"),
    "xgradcam": (_LAYER, "XGrad-CAM: channels weighted by gradient x activation over the "
                         "channel's sum (1 forward + 1 backward)"),
    "hirescam": (_LAYER, "HiResCAM: gradient x activation summed over channels, voxel by voxel "
                         "(1 forward + 1 backward)"),
    "layercam": (_LAYER, "LayerCAM: positive gradient x activation summed over channels "
                         "(1 forward + 1 backward)"),
    "scorecam": (_CHANNELS, "Score-CAM: softmax of the scores of the input masked by each "
                            "channel (1 + channels forwards, batched)"),
    "ablationcam": (_CHANNELS, "Ablation-CAM: relative score drop when a channel is zeroed "
                               "(1 + channels forwards, batched)"),
    "eigencam": (_LAYER, "Eigen-CAM: first principal component of the layer's activations, "
                         "whatever the target (1 forward)"),
}
GRADIENT_CAMS = ("gradcam_pp", "xgradcam", "hirescam", "layercam")
#: The CAMs that use no gradient (their layer pass runs without one).
FORWARD_CAMS = ("scorecam", "ablationcam", "eigencam")

Forward = Callable[[torch.Tensor], torch.Tensor]


def _scores(out: torch.Tensor, target: int | None) -> torch.Tensor:
    """One score per volume: the target class's, or the model's own (a region score)."""
    return (out if target is None else out[:, target]).reshape(-1)


def layer_pass(forward: Forward, layer: torch.nn.Module, x: torch.Tensor, target: int | None,
               grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores of ``x`` and ``layer``'s output in the same pass (with the graph if
    ``grad``)."""
    seen: list[Any] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.set_grad_enabled(grad):
            scores = _scores(forward(x), target)
    finally:
        handle.remove()
    return scores, _one_map(seen)


def _one_map(seen: list[Any]) -> torch.Tensor:
    _ran_once(len(seen))
    acts = seen[0]
    if not isinstance(acts, torch.Tensor) or acts.ndim != 5:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise XaimedError(f"the CAM layer's output {shape} is no 3D feature map (batch, "
                          "channels, z, y, x): name a convolutional layer (layer='...').")
    return acts


def _ran_once(calls: int) -> None:
    if calls != 1:
        raise XaimedError(f"the CAM layer ran {calls} times in one forward pass: its "
                          "channels have no single map to weigh. Name a layer that runs once "
                          "(layer='...').")


def gradient_cam(method: str, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The map of a gradient CAM variant from the layer's output and the target's gradient,
    ``(n, C, z, y, x)`` each; ``(n, 1, z, y, x)``, before the ReLU."""
    a, g = acts.float(), grads.float()
    space = (2, 3, 4)
    if method == "hirescam":
        return (g * a).sum(dim=1, keepdim=True)
    if method == "layercam":
        return (F.relu(g) * a).sum(dim=1, keepdim=True)
    total = a.sum(dim=space, keepdim=True)
    if method == "gradcam_pp":
        g2 = g * g
        alpha = g2 / (2 * g2 + total * g2 * g + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        weights = (F.relu(g) * alpha).sum(dim=space, keepdim=True)
    elif method == "xgradcam":
        weights = (g * a / (total + 1e-7)).sum(dim=space, keepdim=True)
    else:  # pragma: no cover - the caller passes one of GRADIENT_CAMS
        raise XaimedError(f"{method} is no gradient CAM")
    return (weights * a).sum(dim=1, keepdim=True)


def eigen_cam(acts: torch.Tensor) -> torch.Tensor:
    """Each volume's activations, voxels x channels and centred per channel, projected on
    their first right singular vector; flipped when ``|min| > |max|``.

    The vector is the top eigenvector of the channels' C x C Gram matrix (in float64 where the
    device has it): the same vector as the SVD's, found in a fraction of the time a tall SVD
    takes (0.37 s for 32^3 voxels x 32 channels on two CPU cores)."""
    maps = []
    wide = torch.float32 if acts.device.type == "mps" else torch.float64
    for a in acts:
        m = a.reshape(a.shape[0], -1).T.to(wide)
        m = m - m.mean(dim=0)
        vector = torch.linalg.eigh(m.T @ m)[1][:, -1]
        projection = m @ vector
        if projection.min().abs() > projection.max().abs():
            projection = -projection
        maps.append(projection.reshape(a.shape[1:]).float())
    return torch.stack(maps)[:, None]


def _channel_batches(forward_batch: Callable[[torch.Tensor], torch.Tensor], channels: int,
                     batch_size: int, device: torch.device, label: str,
                     count: dict[str, int]) -> Steps[torch.Tensor]:
    """The scores of ``forward_batch(chunk)`` for every channel index, ``batch_size`` channels
    per pass (halved on out of memory), with progress per pass; ``count`` adds up the volumes
    and calls of the passes that gave scores."""
    out = torch.empty(channels, dtype=torch.float64, device=device)
    start, batch_size = 0, max(1, int(batch_size))
    while start < channels:
        chunk = torch.arange(start, min(start + batch_size, channels), device=device)
        try:
            with torch.no_grad():
                out[chunk] = forward_batch(chunk).double()
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            batch_size = halved_batch(exc, batch_size, device)  # retry this chunk
            continue
        start += len(chunk)
        count["forward"] += len(chunk)
        count["forward_calls"] += 1
        yield Progress(start, channels, f"{label}: {start} of {channels} channels")
    return out


def chosen_channels(acts: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Indices of the ``channels`` channels of ``acts`` ``(1, C, z, y, x)`` with the largest
    mean activation (all of them, in order, for None)."""
    n = int(acts.shape[1])
    if channels is not None and int(channels) < 1:
        raise XaimedError(f"channels must be at least 1 (or None for all), got {channels}.")
    if channels is None or int(channels) >= n:
        return torch.arange(n, device=acts.device)
    means = acts[0].float().mean(dim=(1, 2, 3))
    return torch.sort(torch.topk(means, int(channels)).indices).values


def score_cam_weights(forward: Forward, x: torch.Tensor, target: int | None,
                      acts: torch.Tensor, batch_size: int, count: dict[str, int]
                      ) -> Steps[torch.Tensor]:
    """Softmax over the channels of the target's score on the input masked by each channel
    (upsampled to the input, scaled to [0, 1]); ``acts`` is ``(1, C, z, y, x)``, the channels
    to score."""
    size = tuple(x.shape[2:])
    x = x.detach()

    def masked(chunk: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(acts[:, chunk].float(), size=size, mode="trilinear",
                           align_corners=False)[0]
        flat = up.reshape(len(chunk), -1)
        low = flat.min(dim=1).values.view(-1, 1, 1, 1)
        high = flat.max(dim=1).values.view(-1, 1, 1, 1)
        masks = (up - low) / (high - low + 1e-8)
        return _scores(forward(x * masks[:, None].to(x.dtype)), target)

    scores = yield from _channel_batches(masked, acts.shape[1], batch_size, x.device,
                                         "scorecam", count)
    return torch.softmax(scores, dim=0).float()


def ablation_cam_weights(forward: Forward, layer: torch.nn.Module, x: torch.Tensor,
                         target: int | None, reference: torch.Tensor, channels: torch.Tensor,
                         batch_size: int, count: dict[str, int]) -> Steps[torch.Tensor]:
    """``(y - y_k) / y`` for each channel ``k`` in ``channels`` of ``layer``'s output: ``y``
    the target's score (``reference``), ``y_k`` the score with channel ``k`` set to zero (one
    volume per channel in each pass, the layer's output replaced by a hook)."""
    y = float(reference)
    if y == 0.0:
        raise XaimedError("ablationcam divides by the target's score, which is exactly 0 on "
                          "this volume: pick scorecam or gradcam_pp, or another target.")
    x = x.detach()

    def ablated(chunk: torch.Tensor) -> torch.Tensor:
        calls = []

        def zero(_m: Any, _i: Any, out: Any) -> torch.Tensor:
            calls.append(1)
            out = _one_map([out]).clone()
            out[torch.arange(len(chunk), device=out.device), channels[chunk]] = 0
            return out

        handle = layer.register_forward_hook(zero)
        try:
            scores = _scores(forward(x.repeat(len(chunk), 1, 1, 1, 1)), target)
        finally:
            handle.remove()
        _ran_once(len(calls))
        return scores

    ablated_scores = yield from _channel_batches(ablated, len(channels), batch_size, x.device,
                                                 "ablationcam", count)
    return ((y - ablated_scores) / y).float()


def cam_steps(method: str, forward: Forward, layer: torch.nn.Module, x: torch.Tensor,
              target: int | None, batch_size: int, primed: Any = None,
              passes: dict[str, Any] | None = None, channels: int | None = None
              ) -> Steps[torch.Tensor]:
    """The map of CAM ``method`` on ``layer`` for ``x`` ``(1, C, z, y, x)``, upsampled to the
    input grid: ``(1, 1, z, y, x)``, ReLU applied.

    ``forward`` maps a batch to scores ``(n, classes)``, or to ``(n,)`` (a region score, where
    ``target`` is None). ``primed``: the model check's pass (a
    :class:`~napari_xaimed.attribution.methods.Primed`), whose output and layer output are used
    instead of a pass of this method's own when they are for ``layer``. ``passes``: filled with
    the volumes this map costs (``forward``, ``backward``) and the forward calls made.
    ``channels``: Score-CAM and Ablation-CAM score at most this many channels (see
    :func:`chosen_channels`).
    """
    grad = method in GRADIENT_CAMS
    if primed is not None and primed.layer is layer and primed.layer_output is not None \
            and primed.take():
        scores, acts = _scores(primed.output, target), primed.layer_output
    else:
        xg = x.detach().clone().requires_grad_(grad)
        scores, acts = layer_pass(forward, layer, xg, target, grad)
    count = {"forward": 1, "backward": 0, "forward_calls": 1, "channels": int(acts.shape[1])}
    if grad:
        grads = torch.autograd.grad(scores.sum(), acts, allow_unused=True)[0]
        if grads is None:
            raise XaimedError(f"{method}: the target's score does not depend on the CAM "
                              "layer: name another layer (layer='...').")
        count["backward"] = 1
        with torch.no_grad():
            cam = gradient_cam(method, acts.detach(), grads)
    else:
        acts = acts.detach()
        if method == "eigencam":
            cam = eigen_cam(acts)
        else:
            picked = chosen_channels(acts, channels)
            if method == "scorecam":
                weights = yield from score_cam_weights(forward, x, target, acts[:, picked],
                                                       batch_size, count)
            else:
                weights = yield from ablation_cam_weights(forward, layer, x, target,
                                                          scores.detach()[0], picked,
                                                          batch_size, count)
            count["scored_channels"] = len(picked)
            cam = (weights.view(1, -1, 1, 1, 1) * acts[:, picked].float()).sum(
                dim=1, keepdim=True)
    if passes is not None:
        passes.update(count)
    cam = F.relu(cam)
    return F.interpolate(cam, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
