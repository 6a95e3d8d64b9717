"""Every method on MONAI's own 3D networks, as a new user passes them: the module itself, a
TorchScript trace, and a state dict with a JSON config naming the network. Each method gives a
finite, non-zero map on the volume's grid or refuses with a reason; a TorchScript model gives
the module's own map or is refused, never another one."""

import json

import numpy as np
import pytest
import torch
from monai.networks import nets

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import ATTENTION_METHODS, attribute
from napari_xaimed.attribution.hooked import HOOKED
from napari_xaimed.attribution.incremental import split_model
from napari_xaimed.attribution.methods import METHODS
from napari_xaimed.models.loading import load_model
from napari_xaimed.samples import lesion_volume

SIZE = 32
#: Seeded networks, small enough for a 32³ volume (SwinUNETR with batch norm: instance norm
#: refuses its 1x1x1 bottleneck at 32³).
NETWORKS = {
    "DenseNet121": dict(spatial_dims=3, in_channels=1, out_channels=2),
    "resnet18": dict(spatial_dims=3, n_input_channels=1, num_classes=2),
    "SEResNet50": dict(spatial_dims=3, in_channels=1, num_classes=2),
    "EfficientNetBN": dict(model_name="efficientnet-b0", spatial_dims=3, in_channels=1,
                           num_classes=2, pretrained=False),
    "ViT": dict(in_channels=1, img_size=SIZE, patch_size=8, hidden_size=48, mlp_dim=96,
                num_layers=2, num_heads=4, classification=True, num_classes=2, spatial_dims=3),
    "UNet": dict(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
                 strides=(2, 2), num_res_units=1),
    "BasicUNet": dict(spatial_dims=3, in_channels=1, out_channels=2,
                      features=(8, 8, 16, 32, 64, 8)),
    "SegResNet": dict(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8),
    "AttentionUnet": dict(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
                          strides=(2, 2)),
    "DynUNet": dict(spatial_dims=3, in_channels=1, out_channels=2, kernel_size=[3, 3, 3],
                    strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[8, 16, 32],
                    res_block=True),
    "UNETR": dict(in_channels=1, out_channels=2, img_size=SIZE, feature_size=8, hidden_size=48,
                  mlp_dim=96, num_heads=4, spatial_dims=3),
    "SwinUNETR": dict(in_channels=1, out_channels=2, feature_size=12, spatial_dims=3,
                      depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 3), norm_name="batch"),
}
SEGMENTERS = ("UNet", "BasicUNet", "SegResNet", "AttentionUnet", "DynUNet", "UNETR",
              "SwinUNETR")
#: The cheapest settings that still exercise each method's code path.
CHEAP = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 2},
         "smoothgrad_sq": {"samples": 2}, "vargrad": {"samples": 2},
         "gradient_shap": {"samples": 2}, "occlusion": {"window": 16, "stride": 16},
         "feature_ablation": {"supervoxels": 8}, "shapley": {"supervoxels": 6, "samples": 1},
         "kernel_shap": {"supervoxels": 6, "samples": 8},
         # one pass per channel: 4 of DenseNet121's 512 at 32^3 (the others weigh 0)
         "scorecam": {"channels": 4}, "ablationcam": {"channels": 4}}
#: The refusals on the module (and state dict) route, with a phrase of their reason: LRP has
#: no rule for normalisation, gating and smooth activations, and no conservation through
#: residual additions and concatenations. Everything else gives a map.
REFUSED = {
    ("DenseNet121", "lrp"): "no LRP rule covers",
    ("resnet18", "lrp"): "no LRP rule covers",
    ("SEResNet50", "lrp"): "(Sigmoid)",
    ("EfficientNetBN", "lrp"): "(ConstantPad3d)",
    ("ViT", "lrp"): "(GELU)",
    ("UNet", "lrp"): "(InstanceNorm3d)",
    ("BasicUNet", "lrp"): "(InstanceNorm3d)",
    ("SegResNet", "lrp"): "(GroupNorm)",
    ("AttentionUnet", "lrp"): "(Sigmoid)",
    ("DynUNet", "lrp"): "(LeakyReLU)",
    ("UNETR", "lrp"): "(GELU)",
    ("SwinUNETR", "lrp"): "(LayerNorm)",
}
#: The attention methods refuse every network without self-attention blocks.
TRANSFORMERS = ("ViT", "UNETR", "SwinUNETR")
REFUSED.update({(name, method): "no self-attention blocks" for name in NETWORKS
                if name not in TRANSFORMERS for method in ATTENTION_METHODS})
#: A map, or this refusal: the random EfficientNet's scores hardly depend on the input
#: (gradients ~1e-16), and whether its last spatial map holds any positive evidence for the
#: class turns on the volume's noise.
MAP_OR_REFUSED = {
    ("EfficientNetBN", "gradcam"): "map of zeros",
    ("EfficientNetBN", "guided_gradcam"): "map of zeros",
    # its layer's output goes below zero, and zeroing the 4 most active of its 512 channels
    # (CHEAP) raises the score on this volume: negative weights, no positive part (all 512
    # give a map, in 513 passes)
    ("DenseNet121", "ablationcam"): "map of zeros",
    # its head is a 1x1x1 convolution: HiResCAM on the layer before it is the channel's logit
    # (less its bias) inside the lesion, negative there for these random weights
    ("SwinUNETR", "hirescam"): "map of zeros",
}


def _network(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(nets, name)(**NETWORKS[name]).eval()


@pytest.fixture(scope="module")
def lesion():
    return lesion_volume((SIZE,) * 3, n_lesions=1, lesion_radius_mm=(3.0, 5.0), seed=3)


def _routes(name: str, folder) -> dict[str, object]:
    """The network as a module, and loaded (once, as a user would) from a TorchScript file
    and from a state dict with its JSON config."""
    net = _network(name)
    scripted = folder / f"{name}-scripted.pt"
    torch.jit.trace(net, torch.zeros((1, 1) + (SIZE,) * 3), strict=False,
                    check_trace=False).save(str(scripted))
    weights = folder / f"{name}.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps({"network": name,
                                                        "args": NETWORKS[name]}))
    return {"module": net, "torchscript": load_model(scripted), "state dict": load_model(weights)}


def _run(model, sample, method, segmentation):
    # a segmentation network is explained inside the lesion (its random weights may predict
    # none of it)
    region = sample.lesions > 0 if segmentation else None
    try:
        return attribute(model, sample.image, method, region=region, seed=0,
                         **CHEAP.get(method, {}))
    except XaimedError as exc:
        return str(exc)


@pytest.mark.parametrize("name", NETWORKS)
def test_every_method_on_a_monai_network_gives_a_map_or_says_why(name, lesion, tmp_path):
    routes = _routes(name, tmp_path)
    segmentation = name in SEGMENTERS
    for method in METHODS:
        got = {route: _run(model, lesion, method, segmentation)
               for route, model in routes.items()}
        module = got["module"]
        where = f"{name} / {method}"
        if (name, method) in REFUSED:
            assert isinstance(module, str), f"{where}: expected a refusal, got a map"
            assert REFUSED[name, method] in module, f"{where}: {module}"
        elif (name, method) in MAP_OR_REFUSED and isinstance(module, str):
            assert MAP_OR_REFUSED[name, method] in module, f"{where}: {module}"
        else:
            assert not isinstance(module, str), f"{where} was refused: {module}"
            assert module.map.shape == lesion.image.shape
            assert np.isfinite(module.map).all() and np.any(module.map), where
        # the same weights from a state dict: the same result
        by_file = got["state dict"]
        if isinstance(module, str):
            assert by_file == module, where
        else:
            np.testing.assert_array_equal(by_file.map, module.map, err_msg=where)
        # TorchScript: refused where the method needs module hooks, else the module's map
        scripted = got["torchscript"]
        if method in HOOKED or method in ATTENTION_METHODS:
            assert isinstance(scripted, str) and "TorchScript" in scripted, where
            assert "state dict" in scripted
        elif isinstance(module, str):
            assert scripted == module, where
        else:
            assert not isinstance(scripted, str), f"{where} as TorchScript: {scripted}"
            scale = float(np.abs(module.map).max())
            # a scripted graph fuses differently: last-bit differences, larger relative to
            # the tiny squared gradients of smoothgrad_sq and vargrad (~1e-35 here)
            np.testing.assert_allclose(scripted.map, module.map, rtol=0, atol=1e-3 * scale,
                                       err_msg=where)
        if method == "gradcam" and not isinstance(module, str):
            _check_default_layer(routes["module"], lesion.image.shape, module)


def _check_default_layer(net, shape, result) -> None:
    """The default Grad-CAM layer is a spatial feature map of more than one voxel, and the
    result says which it is and that it was the default."""
    layer = result.params["layer"]
    assert layer in dict(net.named_modules())
    assert "default" in result.params["layer_choice"]
    seen = []
    handle = net.get_submodule(layer).register_forward_hook(lambda _m, _i, o: seen.append(o))
    try:
        with torch.no_grad():
            net(torch.zeros((1, 1) + shape))
    finally:
        handle.remove()
    assert seen[0].ndim == 5 and np.prod(seen[0].shape[2:]) > 1, (layer, seen[0].shape)


def test_gradcam_on_a_one_voxel_layer_is_refused_with_earlier_layers(lesion):
    lesion = lesion.image
    net = _network("DenseNet121")  # 32 / 2**5: its last feature map is 1x1x1
    with pytest.raises(XaimedError, match="1x1x1 feature map") as info:
        attribute(net, lesion, "gradcam", layer="features.norm5")
    assert "features.denseblock4" in str(info.value) or "features.transition3" in str(info.value)
    default = attribute(net, lesion, "gradcam")
    assert default.params["layer"] != "features.norm5"
    assert np.ptp(default.map) > 0  # not the flat map of a one-voxel layer


class _Holder(torch.nn.Module):
    """Runs a block it shares with its parent (as DynUNet's skip layers do)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class _Reused(torch.nn.Module):
    """One in-place ReLU called twice per pass, and a block registered in two places."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(1, 4, 3, padding=1)
        self.act = torch.nn.ReLU(inplace=True)
        self.stage = torch.nn.Sequential(torch.nn.Conv3d(4, 4, 3, padding=1), torch.nn.ReLU())
        self.path = _Holder(self.stage)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.path(self.act(self.conv1(x)))
        x = self.act(x - 0.05)
        return self.fc(x.mean(dim=(2, 3, 4)))


class _Distinct(torch.nn.Module):
    """The same network with one module per use, as Captum needs it."""

    def __init__(self, reused: _Reused):
        super().__init__()
        self.conv1, self.act1 = reused.conv1, torch.nn.ReLU()
        self.stage, self.act2, self.fc = reused.stage, torch.nn.ReLU(), reused.fc

    def forward(self, x):
        x = self.stage(self.act1(self.conv1(x)))
        return self.fc(self.act2(x - 0.05).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("method", ["deeplift", "guided_backprop"])
def test_reused_and_shared_modules_give_captums_map_of_the_untangled_network(method, volume):
    torch.manual_seed(0)
    reused = _Reused().eval()
    distinct = _Distinct(reused).eval()
    x = torch.as_tensor(volume)[None, None].float()
    assert torch.equal(reused(x.clone()), distinct(x))
    ours = attribute(reused, volume, method, target=1)
    theirs = attribute(distinct, volume, method, target=1)  # no reuse: Captum as it is
    np.testing.assert_allclose(ours.map, theirs.map, rtol=1e-5, atol=1e-7)
    assert np.any(ours.map)
    # the user's model is left as it was: still one shared, in-place ReLU, no hooks
    assert reused.act.inplace and reused.path.inner is reused.stage
    assert not any(m._forward_hooks or m._backward_hooks for m in reused.modules())


def test_occlusion_on_a_network_with_skip_connections_is_the_full_occlusion(lesion):
    lesion = lesion.image
    net = _network("BasicUNet")
    x = torch.as_tensor(lesion)[None, None].float()
    assert split_model(net, x) is None  # its traced graph is no chain of local layers
    fast = attribute(net, lesion, "occlusion", window=8, stride=8, incremental=True)
    full = attribute(net, lesion, "occlusion", window=8, stride=8, incremental=False)
    np.testing.assert_allclose(fast.map, full.map, rtol=1e-5,
                               atol=1e-5 * float(np.abs(full.map).max()))
