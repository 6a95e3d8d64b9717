"""Segmentation with a model: sliding windows against whole-volume inference, the bundled
network's Dice on unseen sample volumes, output paths, resampling, loading, checks, cancel."""

import inspect
import json
import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_xaimed import XaimedError
from napari_xaimed.models.lesion_classifier import LesionNet
from napari_xaimed.models.lesion_segmenter import WEIGHTS
from napari_xaimed.samples import lesion_volume
from napari_xaimed.segmentation import deep
from napari_xaimed.segmentation.deep import (
    model_segmentation_steps,
    segment_with_model,
    window_count,
)
from napari_xaimed.training.segmenter import dice


def pointwise(out_channels: int = 2, seed: int = 0) -> torch.nn.Module:
    """A fully convolutional net of 1x1x1 convolutions: each voxel's output depends on that
    voxel alone, so any tiling gives exactly the whole-volume output."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 6, 1), torch.nn.Tanh(),
                               torch.nn.Conv3d(6, out_channels, 1)).eval()


def whole(model: torch.nn.Module, volume: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(volume)[None, None])[0]


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(32, 48, 16)).astype(np.float32)


def test_exactly_tiling_windows_equal_whole_volume_inference(volume):
    model = pointwise(3)
    probs = torch.softmax(whole(model, volume), dim=0)
    result = segment_with_model(volume, model, roi_size=16, overlap=0.0, blend="constant",
                                sw_batch_size=2, device="cpu")
    assert result.windows == 2 * 3 * 1
    np.testing.assert_allclose(result.probability, (1 - probs[0]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(result.labels, probs.argmax(dim=0).numpy())
    # overlapping Gaussian-weighted windows of a pointwise net average equal values
    blended = segment_with_model(volume, model, roi_size=(16, 16, 8), overlap=0.5,
                                 blend="gaussian", device="cpu")
    np.testing.assert_allclose(blended.probability, result.probability, atol=1e-5)


def test_tiles_land_in_place_for_a_net_with_spatial_context(volume):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv3d(4, 2, 1)).eval()
    reference = torch.softmax(whole(model, volume), dim=0)[1].numpy()
    result = segment_with_model(volume, model, roi_size=16, overlap=0.0, blend="constant",
                                device="cpu")
    # inside each 16^3 tile, away from its one-voxel border, the window saw what the whole
    # volume shows
    inner = np.zeros(volume.shape, bool)
    for z in (0, 16):
        for y in (0, 16, 32):
            inner[z + 1:z + 15, y + 1:y + 15, 1:15] = True
    np.testing.assert_allclose(result.probability[inner], reference[inner], atol=1e-5)
    assert np.abs(result.probability - reference).max() > 1e-3  # the borders do differ


def test_sigmoid_and_softmax_outputs(volume):
    single = pointwise(1, seed=2)
    logit = whole(single, volume)[0]
    sig = segment_with_model(volume, single, output="sigmoid", threshold=0.4, roi_size=16,
                             device="cpu")
    np.testing.assert_allclose(sig.probability, torch.sigmoid(logit).numpy(), atol=1e-5)
    np.testing.assert_array_equal(sig.labels, (torch.sigmoid(logit) > 0.4).numpy())

    multi = pointwise(3, seed=3)
    probs = torch.sigmoid(whole(multi, volume))
    labels = segment_with_model(volume, multi, output="sigmoid", roi_size=16, device="cpu")
    best, index = probs.max(dim=0)
    np.testing.assert_array_equal(labels.labels, np.where(best > 0.5, index + 1, 0))
    np.testing.assert_allclose(labels.probability, best.numpy(), atol=1e-5)

    two = pointwise(2, seed=3)  # two classes take a shortcut: P(1) = sigmoid(l1 - l0)
    soft = torch.softmax(whole(two, volume), dim=0)
    result = segment_with_model(volume, two, roi_size=16, device="cpu")
    np.testing.assert_allclose(result.probability, (1 - soft[0]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(result.labels, soft.argmax(dim=0).numpy())
    assert 0.05 < result.labels.mean() < 0.95
    background = segment_with_model(volume, two, channel=0, roi_size=16, device="cpu")
    np.testing.assert_allclose(background.probability, soft[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(background.labels, (soft.argmax(dim=0) == 0).numpy())

    soft = torch.softmax(whole(multi, volume), dim=0)
    chosen = segment_with_model(volume, multi, channel=2, roi_size=16, device="cpu")
    np.testing.assert_allclose(chosen.probability, soft[2].numpy(), atol=1e-5)
    np.testing.assert_array_equal(chosen.labels, (soft.argmax(dim=0) == 2).numpy())
    assert chosen.labels.dtype == np.uint8 and chosen.probability.dtype == np.float32


def test_bundled_network_finds_lesions_on_unseen_sample_volumes():
    scores = []
    for seed in (70_001, 70_002, 70_003):  # training used 20_000..20_023
        sample = lesion_volume(seed=seed)
        result = segment_with_model(sample.image, "bundled-segmenter", spacing=sample.spacing,
                                    device="cpu")
        assert result.labels.shape == sample.image.shape
        scores.append(dice(result.labels > 0, sample.mask))
        assert result.model["source"] == "bundled-segmenter"
        assert result.classes == ["background", "lesion"]
    assert np.mean(scores) > 0.8, scores
    assert WEIGHTS.stat().st_size < 300_000


def test_resampling_to_the_model_spacing_and_back_keeps_the_grid():
    z, y, x = np.mgrid[:20, :30, :24]
    spacing = (2.0, 1.0, 1.5)
    mm = np.sqrt(((z - 10) * 2.0) ** 2 + (y - 15.0) ** 2 + ((x - 12) * 1.5) ** 2)
    volume = (mm < 9).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Conv3d(1, 1, 1).eval()
    with torch.no_grad():
        model.weight.fill_(10.0)
        model.bias.fill_(-5.0)
    direct = segment_with_model(volume, model, spacing=spacing, output="sigmoid", roi_size=16,
                                device="cpu")
    resampled = segment_with_model(volume, model, spacing=spacing, model_spacing=(1, 1, 1),
                                   output="sigmoid", roi_size=16, overlap=0.0, device="cpu")
    assert resampled.labels.shape == resampled.probability.shape == volume.shape
    assert resampled.params["model_grid"] == [40, 30, 36]
    assert resampled.windows == window_count((40, 30, 36), (16, 16, 16), 0.0) == 3 * 2 * 3
    np.testing.assert_array_equal(direct.labels, volume > 0)
    assert np.mean(resampled.labels == direct.labels) > 0.98
    two = torch.nn.Conv3d(1, 2, 1).eval()  # softmax over (background, thing)
    with torch.no_grad():
        two.weight.copy_(torch.tensor([-5.0, 5.0]).view(2, 1, 1, 1, 1))
        two.bias.copy_(torch.tensor([2.5, -2.5]))
    soft = segment_with_model(volume, two, spacing=spacing, model_spacing=(1, 1, 1),
                              roi_size=16, overlap=0.0, device="cpu")
    assert soft.labels.shape == volume.shape
    np.testing.assert_allclose(soft.probability, resampled.probability, atol=1e-5)
    np.testing.assert_array_equal(soft.labels, resampled.labels)


def test_largest_component_keeps_the_biggest_blob():
    volume = np.zeros((24, 24, 24), np.float32)
    volume[2:12, 2:12, 2:12] = 1
    volume[16:19, 16:19, 16:19] = 1
    volume[20:22, 2:4, 2:4] = 1
    model = torch.nn.Conv3d(1, 1, 1).eval()
    with torch.no_grad():
        model.weight.fill_(10.0)
        model.bias.fill_(-5.0)
    kept = segment_with_model(volume, model, output="sigmoid", largest_component=True,
                              roi_size=16, device="cpu")
    components, n = ndi.label(volume > 0, structure=np.ones((3, 3, 3)))
    assert n == 3
    sizes = ndi.sum(np.ones_like(volume), components, range(1, n + 1))
    np.testing.assert_array_equal(kept.labels, components == 1 + int(np.argmax(sizes)))


def test_torchscript_and_state_dict_with_json_load_and_segment(tmp_path, volume):
    model = pointwise(2)
    expected = segment_with_model(volume, model, roi_size=16, device="cpu")
    scripted = tmp_path / "seg.ts"
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 1, 16, 16, 16)), str(scripted))
    from_script = segment_with_model(volume, scripted, roi_size=16, device="cpu")
    np.testing.assert_allclose(from_script.probability, expected.probability, atol=1e-6)
    assert from_script.model["sha256"] and from_script.model["source"] == str(scripted)

    from monai.networks.nets import UNet

    args = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [2, 4],
            "strides": [2], "num_res_units": 0}
    torch.manual_seed(4)
    net = UNet(**args).eval()
    weights = tmp_path / "unet.pt"
    torch.save(net.state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "UNet", "args": args, "preprocessing": {"scaling": "minmax"},
         "classes": ["background", "thing"]}))
    loaded = segment_with_model(volume, weights, roi_size=16, overlap=0.0, blend="constant",
                                device="cpu")
    scaled = (volume - volume.min()) / (volume.max() - volume.min())
    tiles = []
    with torch.no_grad():  # the same tiles by hand (instance norm: each tile on its own)
        for zz in (0, 16):
            tiles.append(torch.cat([net(torch.from_numpy(np.ascontiguousarray(
                scaled[zz:zz + 16, yy:yy + 16]))[None, None]) for yy in (0, 16, 32)], dim=3))
    reference = torch.softmax(torch.cat(tiles, dim=2)[0], dim=0)
    np.testing.assert_allclose(loaded.probability, 1 - reference[0].numpy(), atol=1e-5)
    assert loaded.classes == ["background", "thing"]
    assert loaded.params["preprocessing"]["scaling"] == "minmax"


def test_models_that_do_not_fit_say_what_is_wrong(tmp_path, volume):
    two_inputs = torch.nn.Conv3d(2, 2, 1)
    with pytest.raises(XaimedError, match="takes 2 input channels"):
        segment_with_model(volume, two_inputs, roi_size=16, device="cpu")
    scripted = tmp_path / "two.ts"
    torch.jit.save(torch.jit.trace(two_inputs, torch.zeros(1, 2, 4, 4, 4)), str(scripted))
    with pytest.raises(XaimedError, match="does not accept a window of shape"):
        segment_with_model(volume, scripted, roi_size=16, device="cpu")
    with pytest.raises(XaimedError, match="class scores"):
        segment_with_model(volume, LesionNet(), roi_size=16, device="cpu")
    with pytest.raises(XaimedError, match="does not fit its input window"):
        segment_with_model(volume, torch.nn.Conv3d(1, 2, 2, stride=2), roi_size=16,
                           device="cpu")
    with pytest.raises(XaimedError, match="output='sigmoid'"):
        segment_with_model(volume, pointwise(1), roi_size=16, device="cpu")
    with pytest.raises(XaimedError, match="channel 5 does not exist"):
        segment_with_model(volume, pointwise(2), channel=5, roi_size=16, device="cpu")


def test_bad_volumes_and_settings_are_refused(volume):
    model = pointwise(2)
    signature = inspect.signature(deep.model_segmentation_steps).parameters
    assert set(deep.MODEL_PARAMS) == set(signature) - {"volume"}
    with pytest.raises(XaimedError, match="3D"):
        segment_with_model(volume[0], model)
    with pytest.raises(XaimedError, match="3D"):
        segment_with_model(volume[None], model)
    bad = volume.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        segment_with_model(bad, model)
    for kwargs, message in [({"overlap": 1.0}, "overlap"), ({"blend": "max"}, "blend"),
                            ({"output": "relu"}, "output"), ({"roi_size": (16, 16)}, "roi_size"),
                            ({"sw_batch_size": 0}, "sw_batch_size"),
                            ({"autocast": "fp8"}, "autocast"), ({"threshold": 1.5}, "threshold")]:
        with pytest.raises(XaimedError, match=message):
            segment_with_model(volume, model, **kwargs)


class Counting(torch.nn.Module):
    """Counts its calls; fails with an out-of-memory error on batches above ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int | None = None):
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls += 1
        return self.inner(x)


def test_progress_counts_windows_and_cancel_stops_between_batches(volume, monkeypatch):
    monkeypatch.setattr(deep, "REPORT_INTERVAL_S", 0.0)  # report every batch
    model = Counting(pointwise(2))
    steps = model_segmentation_steps(volume, model, roi_size=8, overlap=0.0, device="cpu")
    first = [next(steps) for _ in range(3)]
    total = window_count(volume.shape, (8, 8, 8), 0.0)
    assert total == 4 * 6 * 2 and first[0].total == total + 2
    assert [p.done for p in first] == [0, 1, 2] and first[2].message == f"window 2 of {total}"
    assert torch.is_grad_enabled()  # the windows' no_grad stays inside the model call
    steps.close()  # what a napari worker's quit does
    assert model.calls == 2
    assert not any(t.name == "xaimed-sliding-window" for t in threading.enumerate())

    model.calls = 0
    done = [p.done for p in model_segmentation_steps(volume, model, roi_size=8, overlap=0.0,
                                                     device="cpu")]
    assert model.calls == total and done == list(range(total + 3))

    monkeypatch.setattr(deep, "REPORT_INTERVAL_S", 60.0)  # fast batches run on unreported
    done = [p.done for p in model_segmentation_steps(volume, model, roi_size=8, overlap=0.0,
                                                     device="cpu")]
    assert done == [0, 1, total + 1, total + 2]


def test_out_of_memory_halves_the_window_batch(volume):
    model = Counting(pointwise(2), limit=1)
    result = segment_with_model(volume, model, roi_size=16, sw_batch_size=4, device="cpu")
    expected = segment_with_model(volume, pointwise(2), roi_size=16, device="cpu")
    assert result.params["sw_batch_size"] == 1
    np.testing.assert_allclose(result.probability, expected.probability, atol=1e-6)
    record = result.provenance(["ct"])
    assert record["params"]["method"] == "model"
    assert record["windows"] == window_count(volume.shape, (16, 16, 16), 0.25) == 3 * 4 * 1
    json.dumps(record)
