"""Every gradient and CAM method on nnU-Net's two network classes, ``PlainConvUNet`` and
``ResidualEncoderUNet`` (issue 30 item 1), built as nnU-Net's plans build them (instance
norm, in-place leaky ReLU, stride-2 stages): each explains a segmentation target (class 1's
logit inside a region) with a finite map of the volume's shape that is not all zero, or is
refused with an ``XaimedError`` that says why. The gradient maps are checked against a plain
autograd gradient of the same score, computed here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_xaimed import XaimedError
from napari_xaimed.attribution import attribute

GRADIENT = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
            "smoothgrad_sq", "vargrad", "guided_backprop", "deeplift", "gradient_shap", "lrp")
CAMS = ("gradcam", "guided_gradcam", "gradcam_pp", "xgradcam", "hirescam", "layercam",
        "scorecam", "ablationcam", "eigencam")
CHEAP = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2},
         "smoothgrad_sq": {"samples": 2}, "vargrad": {"samples": 2},
         "gradient_shap": {"samples": 2}}
SHAPE = (16, 16, 16)


def _network(kind: str) -> torch.nn.Module:
    from dynamic_network_architectures.architectures.unet import (
        PlainConvUNet,
        ResidualEncoderUNet,
    )

    torch.manual_seed(0)
    common = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 16],
                  conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * 3,
                  strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], num_classes=2,
                  n_conv_per_stage_decoder=[1, 1], conv_bias=True,
                  norm_op=torch.nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True},
                  nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  deep_supervision=False)
    if kind == "plain":
        return PlainConvUNet(n_conv_per_stage=[2, 2, 2], **common).eval()
    return ResidualEncoderUNet(n_blocks_per_stage=[1, 2, 2], **common).eval()


def _case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    volume[5:11, 5:11, 5:11] += 2.0
    region = np.zeros(SHAPE, bool)
    region[6:10, 6:10, 6:10] = True
    return volume, region


@pytest.mark.parametrize("kind", ["plain", "residual"])
def test_every_gradient_and_cam_method_explains_or_says_why(kind):
    net = _network(kind)
    volume, region = _case()
    made, refused = {}, {}
    for method in (*GRADIENT, *CAMS):
        try:
            result = attribute(net, volume, method, target=1, region=region, device="cpu",
                               seed=0, **CHEAP.get(method, {}))
        except XaimedError as exc:
            refused[method] = str(exc)
            continue
        assert result.map.shape == SHAPE, method
        assert np.isfinite(result.map).all(), method
        assert np.abs(result.map).max() > 0, method
        made[method] = result.map
    for method, reason in refused.items():
        assert len(reason) > 30 and method not in ("saliency", "gradcam"), (method, reason)
    # the core of each family runs on both networks
    assert {"saliency", "integrated_gradients", "gradcam", "gradcam_pp", "eigencam"} <= set(made)

    # saliency is |d score / d x| of the region's summed class-1 logit: autograd by hand
    x = torch.from_numpy(volume)[None, None].requires_grad_(True)
    score = (net(x)[:, 1] * torch.from_numpy(region)).sum()
    (grad,) = torch.autograd.grad(score, x)
    np.testing.assert_allclose(made["saliency"], grad[0, 0].abs().numpy(), rtol=1e-4,
                               atol=1e-6 * float(grad.abs().max()))


def test_a_segmentation_target_costs_the_check_and_the_method_passes_only():
    """The region score is taken from the check's output, not from one more forward pass:
    saliency on a segmentation target runs the network twice (the check, then its forward +
    backward), not three times; the score recorded is the region's summed logit."""
    net = _network("plain")
    volume, region = _case()
    calls = []
    net.register_forward_pre_hook(lambda module, inputs: calls.append(inputs[0].shape[0]))
    result = attribute(net, volume, "saliency", target=1, region=region, device="cpu")
    assert len(calls) == 2, calls
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        expected = float((net(x)[:, 1] * torch.from_numpy(region)).sum())
    np.testing.assert_allclose(result.scores, [expected], rtol=1e-6)
