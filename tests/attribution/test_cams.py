"""The CAM family in 3D (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, Ablation-CAM,
Eigen-CAM) against two independent references:

- pytorch-grad-cam 1.5.7's 2D code, on a network that is 3D in form and 2D in content
  (depth-1 kernels on a one-slice volume) and its 2D twin (the same weights in Conv2d). The
  ``grad-cam`` package cannot be imported here: its ``__init__`` imports torchvision, OpenCV and
  ttach (``utils/model_targets.py``, ``utils/image.py``, ``sess.py``), and torchvision would pull
  another torch. Its formulas are transcribed below from its source, line by line, with the
  file each comes from;
- values derived by hand on a tiny 3D network (1x1x1 convolution, ReLU, global average pool,
  linear), where every CAM has a closed form.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import METHODS, attribute
from napari_xaimed.attribution.cams import CAMS, GRADIENT_CAMS

CAM_NAMES = list(CAMS)
TARGET = 0


# -- pytorch-grad-cam 1.5.7, its 2D code transcribed ------------------------------------------

def _flat_twin(net3d: nn.Sequential) -> nn.Sequential:
    """The 2D network a depth-1 3D network computes on one slice: same weights."""
    layers = OrderedDict()
    for name, m in net3d.named_children():
        if isinstance(m, nn.Conv3d):
            assert m.kernel_size[0] == 1 and m.padding[0] == 0
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size[1:],
                             padding=m.padding[1:])
            conv.weight.data = m.weight.data[:, :, 0].clone()
            conv.bias.data = m.bias.data.clone()
            layers[name] = conv
        elif isinstance(m, nn.MaxPool3d):
            layers[name] = nn.MaxPool2d(m.kernel_size[1:])
        elif isinstance(m, nn.AdaptiveAvgPool3d):
            layers[name] = nn.AdaptiveAvgPool2d(1)
        elif isinstance(m, nn.Upsample):
            layers[name] = nn.Upsample(scale_factor=m.scale_factor[1:], mode=m.mode)
        else:  # ReLU, Flatten, Linear
            layers[name] = m
    return nn.Sequential(layers).eval()


def _scale_cam_image(cam: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """utils/image.py ``scale_cam_image``: min-max to [0, 1], then ``cv2.resize`` (bilinear
    with half-pixel centres: ``align_corners=False``)."""
    img = cam - np.min(cam)
    img = img / (1e-7 + np.max(img))
    if size is not None and img.shape != size:
        img = F.interpolate(torch.from_numpy(np.float32(img))[None, None], size=size,
                            mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.float32(img)


def _projection_with_sign_correction(activations: np.ndarray) -> np.ndarray:
    """utils/svd_on_activations.py ``get_2d_projection_with_sign_correction`` (one image)."""
    reshaped = activations.reshape(activations.shape[0], -1).transpose()
    reshaped = reshaped - reshaped.mean(axis=0)
    _, _, vt = np.linalg.svd(reshaped, full_matrices=True)
    projection = (reshaped @ vt[0, :]).reshape(activations.shape[1:])
    if abs(projection.min()) > abs(projection.max()):
        projection = -projection
    return projection


def pytorch_grad_cam_2d(method, net2d, layer2d, x2d, target, score_align_corners=True):
    """One map of pytorch-grad-cam's ``BaseCAM.forward`` for one 2D image ``x2d`` (1, C, H, W)
    and ``target`` (a function of one image's output, as its ``*OutputTarget`` classes)."""
    acts, grads = [], []

    def save(_m, _i, out):  # activations_and_gradients.py
        acts.append(out.detach().numpy())
        out.register_hook(lambda g: grads.insert(0, g.detach().numpy()))

    handle = layer2d.register_forward_hook(save)
    outputs = net2d(x2d)
    handle.remove()
    if method in GRADIENT_CAMS:  # uses_gradients
        net2d.zero_grad()
        target(outputs[0]).backward(retain_graph=True)
    a = acts[0]
    g = grads[0] if grads else None
    spatial = (2, 3)
    if method == "gradcam_pp":  # grad_cam_plusplus.py
        g2 = g ** 2
        g3 = g2 * g
        sum_activations = np.sum(a, axis=spatial)[:, :, None, None]
        aij = g2 / (2 * g2 + sum_activations * g3 + 0.000001)
        aij = np.where(g != 0, aij, 0)
        weights = np.sum(np.maximum(g, 0) * aij, axis=spatial)
        cam = (weights[:, :, None, None] * a).sum(axis=1)
    elif method == "xgradcam":  # xgrad_cam.py
        sum_activations = np.sum(a, axis=spatial)[:, :, None, None]
        weights = (g * a / (sum_activations + 1e-7)).sum(axis=spatial)
        cam = (weights[:, :, None, None] * a).sum(axis=1)
    elif method == "hirescam":  # hirescam.py
        cam = (g * a).sum(axis=1)
    elif method == "layercam":  # layer_cam.py
        cam = (np.maximum(g, 0) * a).sum(axis=1)
    elif method == "scorecam":  # score_cam.py (UpsamplingBilinear2d: align_corners=True)
        with torch.no_grad():
            up = F.interpolate(torch.from_numpy(a), size=x2d.shape[-2:], mode="bilinear",
                               align_corners=score_align_corners)
            maxs = up.view(up.size(0), up.size(1), -1).max(dim=-1)[0][:, :, None, None]
            mins = up.view(up.size(0), up.size(1), -1).min(dim=-1)[0][:, :, None, None]
            up = (up - mins) / (maxs - mins + 1e-8)
            inputs = x2d[:, None] * up[:, :, None]
            scores = []
            for i in range(0, inputs.shape[1], 16):
                scores += [target(o).item() for o in net2d(inputs[0, i:i + 16])]
            weights = torch.nn.Softmax(dim=-1)(torch.Tensor(scores)[None]).numpy()
        cam = (weights[:, :, None, None] * a).sum(axis=1)
    elif method == "ablationcam":  # ablation_cam.py with ablation_layer.py's AblationLayer
        with torch.no_grad():
            original = target(net2d(x2d)[0]).item()
            new_scores = []
            for k in range(a.shape[1]):
                ablated = torch.from_numpy(a).clone()
                ablated[0, k] = 0 if ablated.min() == 0 else ablated.min() - 1e7
                handle = layer2d.register_forward_hook(lambda *_, v=ablated: v)
                new_scores.append(target(net2d(x2d)[0]).item())
                handle.remove()
        weights = (original - np.float32(new_scores)[None]) / original
        cam = (weights[:, :, None, None] * a).sum(axis=1)
    elif method == "eigencam":  # eigen_cam.py, sign as in seg_eigen_cam.py
        cam = _projection_with_sign_correction(a[0])[None]
    else:
        raise AssertionError(method)
    # base_cam.py compute_cam_per_layer and aggregate_multi_layers
    cam = _scale_cam_image(np.maximum(cam, 0)[0], tuple(x2d.shape[-2:]))
    return _scale_cam_image(np.maximum(cam, 0))


def _classifier() -> nn.Sequential:
    """3D in form, 2D in content: depth-1 kernels and pools."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1)), relu1=nn.ReLU(),
        pool=nn.MaxPool3d((1, 2, 2)),
        conv2=nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)), relu2=nn.ReLU(),
        gpool=nn.AdaptiveAvgPool3d(1), flatten=nn.Flatten(), fc=nn.Linear(6, 3))).eval()


def _segmenter() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1)), relu1=nn.ReLU(),
        pool=nn.MaxPool3d((1, 2, 2)),
        conv2=nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)), relu2=nn.ReLU(),
        up=nn.Upsample(scale_factor=(1, 2, 2), mode="nearest"),
        conv3=nn.Conv3d(6, 2, (1, 1, 1)))).eval()


@pytest.fixture(scope="module")
def slice_volume():
    g = torch.Generator().manual_seed(4)
    return torch.rand((1, 16, 20), generator=g).numpy()


def _unit(m: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1] (pytorch-grad-cam's ``1e-7`` guard left out: the raw maps here are
    about 1e-4, where it would shrink them by 0.1%)."""
    m = m - m.min()
    return m / m.max()


@pytest.mark.parametrize("method", ["gradcam", *CAM_NAMES])
@pytest.mark.parametrize("layer", ["relu1", "relu2"])
def test_classifier_cams_equal_pytorch_grad_cam_on_a_2d_network_in_3d_form(
        method, layer, slice_volume):
    """relu1 keeps the input's grid (every upsampling is the identity); relu2 is half of it:
    the maps are upsampled, bilinearly in 2D and trilinearly in 3D, the same on one slice."""
    net = _classifier()
    ours = attribute(net, slice_volume, method, target=TARGET, layer=layer, device="cpu")
    assert ours.map.shape == slice_volume.shape
    net2d = _flat_twin(net)
    x2d = torch.from_numpy(slice_volume)  # (1, H, W): the one slice as a one-channel image
    if method == "gradcam":  # base_cam.py with grad_cam.py's weights: the mean gradient
        theirs = _gradcam_2d(net2d, getattr(net2d, layer), x2d[None],
                             lambda out: out[TARGET])
    else:
        # Score-CAM upsamples its masks with align_corners=False here (documented), which
        # equals pytorch-grad-cam's align_corners=True only on the input's own grid
        theirs = pytorch_grad_cam_2d(method, net2d, getattr(net2d, layer), x2d[None],
                                     lambda out: out[TARGET],
                                     score_align_corners=layer == "relu1")
    assert np.ptp(theirs) > 0.5
    np.testing.assert_allclose(_unit(ours.map[0]), theirs, atol=2e-5)
    assert ours.params["layer"] == layer and not METHODS[method].signed


def _gradcam_2d(net2d, layer2d, x2d, target):
    acts, grads = [], []

    def save(_m, _i, out):
        acts.append(out.detach().numpy())
        out.register_hook(lambda g: grads.append(g.numpy()))

    handle = layer2d.register_forward_hook(save)
    target(net2d(x2d)[0]).backward()
    handle.remove()
    weights = np.mean(grads[0], axis=(2, 3))  # grad_cam.py
    cam = (weights[:, :, None, None] * acts[0]).sum(axis=1)
    cam = _scale_cam_image(np.maximum(cam, 0)[0], tuple(x2d.shape[-2:]))
    return _scale_cam_image(np.maximum(cam, 0))


@pytest.mark.parametrize("method", CAM_NAMES)
def test_segmentation_cams_equal_pytorch_grad_cam_for_a_region_target(method, slice_volume):
    """A segmentation target, as pytorch-grad-cam's ``SemanticSegmentationTarget``: the
    channel's logit summed inside a mask."""
    net = _segmenter()
    region = np.zeros(slice_volume.shape, bool)
    region[0, 4:11, 6:15] = True
    ours = attribute(net, slice_volume, method, target=0, region=region, layer="relu2",
                     device="cpu")
    assert ours.target == 0 and ours.params["region"] == "given mask"
    mask = torch.from_numpy(region[0]).float()
    net2d = _flat_twin(net)
    theirs = pytorch_grad_cam_2d(method, net2d, net2d.relu2,
                                 torch.from_numpy(slice_volume)[None],
                                 lambda out: (out[0, :, :] * mask).sum(),
                                 score_align_corners=False)
    assert np.ptp(theirs) > 0.5
    np.testing.assert_allclose(_unit(ours.map[0]), theirs, atol=2e-5)


# -- a tiny 3D network, by hand ------------------------------------------------------------------

class Tiny(nn.Module):
    """conv 1x1x1 (3 channels) -> ReLU -> [2x2x2 average pool] -> global mean -> linear.
    The CAM layer is the ReLU, or the pool after it."""

    def __init__(self, a, c, w, b, pooled=False):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)
        self.conv.weight.data = torch.tensor(a, dtype=torch.float32).view(3, 1, 1, 1, 1)
        self.conv.bias.data = torch.tensor(c, dtype=torch.float32)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool3d(2) if pooled else nn.Identity()
        self.fc = nn.Linear(3, 2)
        self.fc.weight.data = torch.tensor(w, dtype=torch.float32)
        self.fc.bias.data = torch.tensor(b, dtype=torch.float32)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).mean(dim=(2, 3, 4)))


A, C = [1.5, -2.0, 0.7], [-0.3, 0.4, 0.1]
W, B = [[0.5, -0.2, 0.3], [0.8, 0.6, -0.4]], [0.1, 0.2]
T = 1  # the explained class


def _acts(v, a=A, c=C, pooled=False):
    """The layer's channels by hand: relu(a_k v + c_k), then the 2x2x2 means."""
    acts = np.maximum(np.asarray(a)[:, None, None, None] * v + np.asarray(c)[:, None, None, None],
                      0)
    if pooled:
        z, y, x = v.shape
        acts = acts.reshape(3, z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(2, 4, 6))
    return acts


def _score(v, a=A, c=C, pooled=False):
    return float(np.dot(W[T], _acts(v, a, c, pooled).mean(axis=(1, 2, 3))) + B[T])


def _upsampled(cam, shape):
    return F.interpolate(torch.from_numpy(np.float32(cam))[None, None], size=shape,
                         mode="trilinear", align_corners=False)[0, 0].numpy()


def hand_cam(method, v, pooled, keep=(0, 1, 2)):
    """Each CAM in closed form: the score is ``sum_k W_k mean(A_k) + b``, so the gradient with
    respect to ``A_k`` is ``W_k / N`` at every voxel (N voxels of the layer). ``keep``: the
    channels Score-CAM and Ablation-CAM score (the others weigh 0)."""
    acts = _acts(v, pooled=pooled)
    n = acts[0].size
    g = np.asarray(W[T]) / n
    s = acts.sum(axis=(1, 2, 3))
    y = _score(v, pooled=pooled)
    if method == "gradcam_pp":
        alpha = g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6)
        weights = n * np.maximum(g, 0) * alpha
    elif method == "xgradcam":
        weights = g * s / (s + 1e-7)
    elif method in ("hirescam", "gradcam"):  # a constant gradient: both are Grad-CAM here
        weights = g
    elif method == "layercam":
        weights = np.maximum(g, 0)
    elif method == "ablationcam":  # y_k = y - W_k mean(A_k)
        weights = np.asarray(W[T]) * acts.mean(axis=(1, 2, 3)) / y
        weights[[k for k in range(3) if k not in keep]] = 0
    elif method == "scorecam":  # the input masked by each upsampled, [0, 1]-scaled channel
        scores = []
        for k in keep:
            mask = _upsampled(acts[k], v.shape).astype(np.float64)
            mask = (mask - mask.min()) / (mask.max() - mask.min() + 1e-8)
            scores.append(_score(v * mask, pooled=pooled))
        shifted = np.exp(scores - np.max(scores))
        weights = np.zeros(3)
        weights[list(keep)] = shifted / shifted.sum()
    else:
        raise AssertionError(method)
    cam = np.maximum(np.tensordot(weights, acts, axes=1), 0)
    return _upsampled(cam, v.shape)


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(7)
    return (torch.rand((4, 6, 8), generator=g) - 0.3).numpy()


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "xgradcam", "hirescam", "layercam",
                                    "scorecam", "ablationcam"])
@pytest.mark.parametrize("pooled", [False, True])
def test_cams_equal_their_closed_form_on_a_tiny_3d_network(method, pooled, small):
    net = Tiny(A, C, W, B, pooled).eval()
    layer = "pool" if pooled else "relu"
    ours = attribute(net, small, method, target=T, layer=layer, device="cpu", batch_size=2)
    expected = hand_cam(method, small.astype(np.float64), pooled)
    assert np.ptp(expected) > 0
    np.testing.assert_allclose(ours.map, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_channels_caps_the_passes_to_the_most_active_channels(method, small):
    """``channels=2``: the two channels with the largest mean activation are scored, the third
    weighs 0; 1 + 2 volumes."""
    net = Tiny(A, C, W, B).eval()
    means = _acts(small.astype(np.float64)).mean(axis=(1, 2, 3))
    keep = tuple(sorted(np.argsort(means)[-2:]))
    ours = attribute(net, small, method, target=T, layer="relu", channels=2, device="cpu")
    expected = hand_cam(method, small.astype(np.float64), False, keep)
    np.testing.assert_allclose(ours.map, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    assert ours.params["passes"]["forward"] == 3 and ours.params["passes"]["scored_channels"] == 2
    with pytest.raises(XaimedError, match="channels must be at least 1"):
        attribute(net, small, method, target=T, channels=0, device="cpu")


def test_eigencam_is_the_centred_input_on_a_rank_one_layer(small):
    """With c = 0, a > 0 and a non-negative input, channel k is ``a_k v``: the activations are
    the rank-one ``v a^T``, their first principal component ``a / |a|``, and the projection
    ``|a| (v - mean v)``, its sign chosen so the larger extreme is positive."""
    v = small - small.min()
    a = np.array([1.5, 2.0, 0.7])
    net = Tiny(a.tolist(), [0.0, 0.0, 0.0], W, B).eval()
    ours = attribute(net, v, "eigencam", target=T, layer="relu", device="cpu")
    projection = np.linalg.norm(a) * (v - v.mean())
    if abs(projection.min()) > abs(projection.max()):
        projection = -projection
    np.testing.assert_allclose(ours.map, np.maximum(projection, 0), rtol=1e-4, atol=1e-5)
    assert ours.params["passes"] == {"forward": 1, "backward": 0, "forward_calls": 1,
                                     "channels": 3}


# -- passes, batches, memory ---------------------------------------------------------------------

@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_channel_passes_are_batched_and_any_batch_size_gives_the_same_map(tiny, volume, method):
    """TinyNet's last feature map has 6 channels: 1 + 6 volumes, in 1 + ceil(6 / batch)
    forward calls (the first the model check's, reused)."""
    maps, calls = {}, []
    hook = tiny.register_forward_hook(lambda _m, i, _o: calls.append(len(i[0])))
    try:
        for batch_size in (1, 4, 64):
            calls.clear()
            result = attribute(tiny, volume, method, batch_size=batch_size, device="cpu")
            batches = -(-6 // batch_size)
            assert calls == [1] + [min(batch_size, 6 - k * batch_size) for k in range(batches)]
            assert result.params["passes"] == {"forward": 7, "backward": 0,
                                               "forward_calls": 1 + batches, "channels": 6,
                                               "scored_channels": 6}
            maps[batch_size] = result.map
    finally:
        hook.remove()
    np.testing.assert_allclose(maps[1], maps[4], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[1], maps[64], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_out_of_memory_halves_the_channel_batch_and_gives_the_same_map(tiny, volume, method):
    class Fussy(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.sizes = model, []

        def forward(self, x):
            if len(x) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            self.sizes.append(len(x))
            return self.model(x)

    fussy = Fussy(tiny)
    ours = attribute(fussy, volume, method, target=TARGET, batch_size=16, device="cpu")
    plain = attribute(tiny, volume, method, target=TARGET, batch_size=1, device="cpu")
    np.testing.assert_allclose(ours.map, plain.map, rtol=1e-5, atol=1e-7)
    assert max(fussy.sizes) == 2 and ours.params["passes"]["forward"] == 7


@pytest.mark.parametrize("method", CAM_NAMES)
def test_each_cam_runs_the_model_once_for_its_layer_and_records_its_passes(tiny, volume,
                                                                           method):
    """The model check's pass is the CAM's layer pass: the gradient variants and Eigen-CAM
    cost one forward in all; the maps equal those of a checked model (no probe)."""
    calls = []
    hook = tiny.register_forward_hook(lambda _m, i, _o: calls.append(len(i[0])))
    try:
        first = attribute(tiny, volume, method, device="cpu", batch_size=8)
        n_first = len(calls)
        second = attribute(tiny, volume, method, target=first.target, device="cpu",
                           batch_size=8)
    finally:
        hook.remove()
    passes = first.params["passes"]
    assert n_first == passes["forward_calls"] == (2 if method in ("scorecam", "ablationcam")
                                                  else 1)
    assert passes["backward"] == (1 if method in GRADIENT_CAMS else 0)
    assert len(calls) - n_first == n_first
    np.testing.assert_allclose(first.map, second.map, rtol=1e-6, atol=1e-8)
    assert first.params["layer"] == "relu2" and "default" in first.params["layer_choice"]


def test_ablationcam_refuses_a_zero_score(volume):
    class Zero(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(1, 2, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(x)).mean(dim=(2, 3, 4)) * 0.0

    with pytest.raises(XaimedError, match="score, which is exactly 0"):
        attribute(Zero().eval(), volume, "ablationcam", target=0, device="cpu")
