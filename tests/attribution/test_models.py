"""Loading models in every accepted form, the bundled classifier, and errors that say why."""

import json

import numpy as np
import pytest
import torch

from napari_xaimed import XaimedError
from napari_xaimed.attribution import attribute, load_model
from napari_xaimed.models.lesion_classifier import WEIGHTS, LesionNet
from napari_xaimed.samples import lesion_volume


def test_torchscript_state_dict_and_monai_name_load_the_same_weights(tmp_path, tiny, volume):
    x = torch.from_numpy(volume)[None, None]
    expected = tiny(x)
    scripted = tmp_path / "tiny.ts"
    torch.jit.save(torch.jit.trace(tiny, x), str(scripted))
    assert torch.allclose(load_model(scripted).module(x), expected, atol=1e-6)

    torch.manual_seed(3)
    net = LesionNet(channels=(2, 3, 4), classes=3).eval()
    weights = tmp_path / "net.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "napari_xaimed.attribution.lesion_model:LesionNet",
         "args": {"channels": [2, 3, 4], "classes": 3},
         "classes": ["a", "b", "c"], "preprocessing": {"scaling": "minmax"}}))
    loaded = load_model(weights, trust=True)  # a "module:Class" network runs only trusted
    assert torch.allclose(loaded.module(x), net(x), atol=1e-6)
    assert loaded.classes == ["a", "b", "c"] and loaded.preprocessing.scaling == "minmax"
    assert len(loaded.sha256) == 64

    from monai.networks.nets import Classifier

    args = {"in_shape": [1, 8, 8, 8], "classes": 2, "channels": [2, 4], "strides": [2, 2]}
    monai_net = Classifier(**args).eval()
    path = tmp_path / "monai.pt"
    torch.save(monai_net.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({"network": "Classifier", "args": args}))
    probe = torch.rand(1, 1, 8, 8, 8)
    assert torch.allclose(load_model(path).module(probe), monai_net(probe), atol=1e-6)


def test_broken_and_mismatched_model_files_say_what_to_do(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(XaimedError, match="neither TorchScript nor a state dict"):
        load_model(broken)
    weights = tmp_path / "net.pt"
    torch.save(LesionNet().state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "napari_xaimed.attribution.lesion_model:LesionNet",
         "args": {"classes": 5}}))
    with pytest.raises(XaimedError, match="do not fit"):
        load_model(weights, trust=True)
    weights.with_suffix(".json").write_text(json.dumps({"network": "NoSuchNet"}))
    with pytest.raises(XaimedError, match="not a MONAI network"):
        load_model(weights)
    with pytest.raises(XaimedError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_model_that_does_not_fit_the_volume_is_refused_before_running(volume, tiny_net):
    two_channels = tiny_net(in_channels=2)
    with pytest.raises(XaimedError, match="channels"):
        attribute(two_channels, volume, "saliency", device="cpu")
    with pytest.raises(XaimedError, match="3 classes"):
        attribute(tiny_net(), volume, "saliency", target=7, device="cpu")
    with pytest.raises(XaimedError, match="unknown method"):
        attribute(tiny_net(), volume, "magic", device="cpu")
    with pytest.raises(XaimedError, match="takes"):
        attribute(tiny_net(), volume, "saliency", steps=3, device="cpu")
    with pytest.raises(XaimedError, match="3D"):
        attribute(tiny_net(), volume[0], "saliency", device="cpu")
    with pytest.raises(XaimedError, match="segmentation models"):
        attribute(tiny_net(), volume, "saliency", region=volume > 0.5, device="cpu")


class TinySegmenter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_segmentation_target_is_a_channel_inside_a_region(volume):
    torch.manual_seed(0)
    model = TinySegmenter().eval()
    region = np.zeros(volume.shape, bool)
    region[4:8, 4:8, 4:8] = True
    result = attribute(model, volume, "saliency", target=1, region=region, device="cpu")
    x = torch.from_numpy(volume)[None, None].requires_grad_(True)
    (model(x)[0, 1][torch.from_numpy(region)]).sum().backward()
    np.testing.assert_allclose(result.map, x.grad[0, 0].abs().numpy(), atol=1e-6)
    assert result.params["region"] == "given mask" and result.target == 1
    with pytest.raises(XaimedError, match="region"):
        attribute(model, volume, "saliency", region=region[:-1], device="cpu")


def test_bundled_classifier_is_small_and_tells_lesions_apart():
    assert WEIGHTS.stat().st_size < 400_000
    model = load_model("bundled")
    correct = 0
    seeds = range(70_000, 70_040)  # never used in training (seeds 10000-10383)
    for seed in seeds:
        sample = lesion_volume(seed=seed, n_lesions=0 if seed % 2 == 0 else None)
        result = attribute(model, sample.image, "saliency", device="cpu")
        correct += int(np.argmax(result.scores) == sample.label)
    assert correct / len(seeds) >= 0.85


def test_gradcam_of_the_bundled_model_peaks_in_the_lesion():
    sample = lesion_volume(seed=2, n_lesions=1)
    result = attribute("bundled", sample.image, "gradcam", target=1)
    assert result.map.shape == sample.image.shape  # 32^3 model input mapped back to 64^3
    peak = np.unravel_index(np.argmax(result.map), result.map.shape)
    assert sample.lesions[peak] > 0
    assert result.model["source"] == "bundled" and result.params["preprocessing"][
        "input_size"] == (32, 32, 32)


def test_a_checked_model_skips_the_probe_and_still_reports_scores(tiny, volume):
    """The second call on a same-shaped input reuses the check (no probe pass) and takes the
    scores from the method's own forward pass: the same map, the same scores. (For saliency
    the first call's probe is already its forward pass.)"""
    from napari_xaimed.attribution import load_model

    model = load_model(tiny)
    calls = []
    hook = tiny.register_forward_hook(lambda *_: calls.append(1))
    first = attribute(model, volume, "saliency", target=1, device="cpu")
    n_first = len(calls)
    second = attribute(model, volume, "saliency", target=1, device="cpu")
    hook.remove()
    # the first call's check is saliency's own forward pass (graph kept): one pass each
    assert n_first == 1 and len(calls) - n_first == 1
    np.testing.assert_array_equal(first.map, second.map)
    assert second.scores == pytest.approx(first.scores)
    ig = attribute(model, volume, "integrated_gradients", target=1, steps=4, device="cpu")
    assert ig.scores == pytest.approx(first.scores)  # computed at the end for IG
    with pytest.raises(XaimedError, match="3 classes"):
        attribute(model, volume, "saliency", target=5, device="cpu")


def test_monai_bundle_folder_loads_its_network_and_weights(tmp_path):
    from monai.networks.nets import Classifier

    args = {"in_shape": [1, 8, 8, 8], "classes": 2, "channels": [2, 4], "strides": [2, 2]}
    torch.manual_seed(1)
    net = Classifier(**args).eval()
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "Classifier", **args}}))
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    loaded = load_model(tmp_path)
    probe = torch.rand(1, 1, 8, 8, 8)
    assert torch.allclose(loaded.module(probe), net(probe), atol=1e-6)
    with pytest.raises(XaimedError, match="not a MONAI bundle"):
        load_model(tmp_path / "configs")
