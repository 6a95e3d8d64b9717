"""Sliding-window attribution of segmentation networks on lazy volumes (attribute_lazy without
input_size), checked against autograd through MONAI's own sliding_window_inference."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from napari_xaimed import XaimedError
from napari_xaimed.attribution import attribute
from napari_xaimed.attribution.lazy import attribute_lazy
from napari_xaimed.io.lazy import write_zarr

SHAPE = (24, 40, 40)
ROI = (16, 16, 16)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8),
                strides=(2,), num_res_units=0).eval()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def region() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[8:14, 10:20, 12:30] = 1
    mask[18:22, 30:36, 4:9] = 1
    return mask


def _swi(net, x, roi, overlap, blend):
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(x, roi, 1, net, overlap=overlap, mode=blend)


def _peer_gradient(net, volume, region, roi, overlap, blend, channel=1):
    x = torch.from_numpy(volume)[None, None].clone().requires_grad_(True)
    out = _swi(net, x, roi, overlap, blend)
    score = (out[0, channel] * torch.from_numpy(region != 0).float()).sum()
    return torch.autograd.grad(score, x)[0][0, 0].numpy(), float(score.detach())


def _peer_ig(net, volume, region, roi, overlap, blend, steps, channel=1):
    from captum.attr import IntegratedGradients

    mask = torch.from_numpy(region != 0).float()

    def forward(batch):
        return torch.stack([(_swi(net, b[None], roi, overlap, blend)[0, channel] * mask).sum()
                            for b in batch])

    x = torch.from_numpy(volume)[None, None]
    return IntegratedGradients(forward).attribute(
        x, baselines=torch.zeros_like(x), n_steps=steps,
        internal_batch_size=steps)[0, 0].detach().numpy()


def _lazy(net, volume, method, **kwargs):
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("preprocessing", {"scaling": "none"})
    return attribute_lazy(net, volume, method, **kwargs)


@pytest.mark.parametrize("overlap,blend", [(0.25, "gaussian"), (0.5, "constant"),
                                           (0.5, "gaussian")])
def test_gradient_maps_equal_autograd_through_sliding_window_inference(
        net, volume, region, overlap, blend, tmp_path):
    grad, score = _peer_gradient(net, volume, region, ROI, overlap, blend)
    common = dict(region=region, roi_size=ROI, overlap=overlap, blend=blend,
                  workdir=tmp_path)
    saliency = _lazy(net, volume, "saliency", **common)
    np.testing.assert_allclose(saliency.map.compute(), np.abs(grad), rtol=1e-4,
                               atol=1e-4 * np.abs(grad).max())
    assert saliency.scores[0] == pytest.approx(score, rel=1e-4)
    assert saliency.params["windows"]["windows"] > 1
    ixg = _lazy(net, volume, "input_x_gradient", **common)
    expected = volume * grad
    np.testing.assert_allclose(ixg.map.compute(), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    assert ixg.signed and not saliency.signed


def test_integrated_gradients_equal_captum_on_sliding_window_inference(net, volume, region,
                                                                        tmp_path):
    steps = 4
    expected = _peer_ig(net, volume, region, ROI, 0.25, "gaussian", steps)
    result = _lazy(net, volume, "integrated_gradients", region=region, roi_size=ROI,
                   overlap=0.25, steps=steps, workdir=tmp_path)
    np.testing.assert_allclose(result.map.compute(), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


def test_window_of_the_volume_equals_in_memory_attribute(net, volume, region, tmp_path):
    small = volume[:16, :16, :16]
    mask = region[:16, :16, :16].copy()
    mask[4:8, 4:8, 4:8] = 1
    for method, extra in (("saliency", {}), ("integrated_gradients", {"steps": 4}),
                          ("integrated_gradients", {"steps": 3, "baseline": "min"})):
        memory = attribute(net, small, method, region=mask, device="cpu",
                           preprocessing={"scaling": "zscore"}, **extra)
        lazy = _lazy(net, small, method, region=mask, roi_size=(16, 16, 16),
                     preprocessing={"scaling": "zscore"}, workdir=tmp_path, **extra)
        scale = np.abs(memory.map).max()
        np.testing.assert_allclose(lazy.map.compute(), memory.map, rtol=1e-4,
                                   atol=1e-4 * scale)
        assert lazy.target == memory.target == 1


def test_default_region_is_the_sliding_window_prediction(net, volume, tmp_path):
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        predicted = (_swi(net, x, ROI, 0.25, "gaussian")[0].argmax(0) == 1).numpy()
    assert predicted.any()
    default = _lazy(net, volume, "saliency", roi_size=ROI, workdir=tmp_path)
    given = _lazy(net, volume, "saliency", roi_size=ROI, region=predicted.astype(np.uint8),
                  workdir=tmp_path)
    assert default.params["region"] == "model prediction"
    assert default.params["windows"]["region_voxels"] == int(predicted.sum())
    np.testing.assert_allclose(default.map.compute(), given.map.compute(), rtol=1e-5,
                               atol=1e-7)


def test_zarr_input_in_small_slabs_equals_numpy(net, volume, region, tmp_path):
    store = write_zarr(tmp_path / "ct.zarr", volume, spacing=(1.0, 1.0, 1.0),
                       chunks=(4, 40, 40))
    mask = write_zarr(tmp_path / "mask.zarr", region, spacing=(1.0, 1.0, 1.0),
                      chunks=(4, 40, 40))
    import zarr

    lazy_volume = zarr.open_group(str(store), mode="r")["0"]
    lazy_mask = zarr.open_group(str(mask), mode="r")["0"]
    whole = _lazy(net, volume, "input_x_gradient", region=region, roi_size=ROI,
                  preprocessing={"scaling": "zscore"}, workdir=tmp_path)
    sliced = _lazy(net, lazy_volume, "input_x_gradient", region=lazy_mask, roi_size=ROI,
                   slab=3, preprocessing={"scaling": "zscore"}, out=tmp_path / "map.zarr")
    assert sliced.params["windows"]["bands"] > 1
    np.testing.assert_allclose(sliced.map.compute(), whole.map.compute(), rtol=1e-5,
                               atol=1e-6 * float(np.abs(whole.map).max()))


def test_padding_of_an_axis_smaller_than_the_window(net, tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(10, 20, 24)).astype(np.float32)
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:8, 5:15, 3:20] = 1
    grad, _ = _peer_gradient(net, volume, mask, ROI, 0.25, "gaussian")
    result = _lazy(net, volume, "saliency", region=mask, roi_size=ROI, workdir=tmp_path)
    np.testing.assert_allclose(result.map.compute(), np.abs(grad), rtol=1e-4,
                               atol=1e-4 * np.abs(grad).max())


def test_errors(net, volume, region, tmp_path):
    common = dict(roi_size=ROI, workdir=tmp_path)
    with pytest.raises(XaimedError, match="crop"):
        _lazy(net, volume, "gradcam", region=region, **common)
    with pytest.raises(XaimedError, match="noisy copy"):
        _lazy(net, volume, "smoothgrad", region=region, **common)
    with pytest.raises(XaimedError, match="blurred baseline"):
        _lazy(net, volume, "integrated_gradients", region=region, baseline="blurred", **common)
    with pytest.raises(XaimedError, match="empty"):
        _lazy(net, volume, "saliency", region=np.zeros(SHAPE, np.uint8), **common)
    with pytest.raises(XaimedError, match="volume's shape"):
        _lazy(net, volume, "saliency", region=region[:-1], **common)
    with pytest.raises(XaimedError, match="3D"):
        _lazy(net, volume[0], "saliency", **common)
    with pytest.raises(XaimedError, match="3D"):
        _lazy(net, volume[None], "saliency", **common)
    (tmp_path / "taken.zarr").mkdir()
    with pytest.raises(XaimedError, match="already exists"):
        _lazy(net, volume, "saliency", out=tmp_path / "taken.zarr", **common)
    with pytest.raises(XaimedError, match="channel 5"):
        _lazy(net, volume, "saliency", region=region, target=5, **common)

    class Classifier(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3, 4)).repeat(1, 2)

    with pytest.raises(XaimedError, match="class scores"):
        _lazy(Classifier(), volume, "saliency", region=region, **common)
    with pytest.raises(XaimedError, match="does not fit its input window"):
        _lazy(net, volume, "saliency", region=region, roi_size=(15, 15, 15),
              workdir=tmp_path)
    # a run that failed after making its temporary folder leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.zarr"]


def test_a_run_with_out_leaves_nothing_in_the_temporary_folder(net, volume, tmp_path,
                                                               monkeypatch):
    """The default region's store is this run's scratch: with ``out`` given, nothing stays."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = _lazy(net, volume, "saliency", roi_size=ROI, out=tmp_path / "map.zarr")
    assert list(scratch.iterdir()) == []
    assert result.params["region"] == "model prediction"
    assert result.params["lazy"]["temporary"] is None
    assert float(result.map.sum().compute()) > 0  # the map reads from out


def test_without_out_only_the_map_store_stays_and_goes_when_python_exits(tmp_path):
    """Without ``out`` the returned map reads a store in the temporary folder: that store, and
    nothing else, stays while Python runs, and is gone once it exits."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    script = f"""
import json, os, numpy as np, torch
from monai.networks.nets import UNet
from napari_xaimed.attribution.lazy import attribute_lazy
torch.manual_seed(0)
net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,),
           num_res_units=0).eval()
volume = np.random.default_rng(0).normal(size={SHAPE}).astype(np.float32)
result = attribute_lazy(net, volume, "saliency", roi_size={ROI}, device="cpu",
                        preprocessing={{"scaling": "none"}})
tmp = os.environ["TMPDIR"]
left = {{name: sorted(os.listdir(os.path.join(tmp, name))) for name in os.listdir(tmp)}}
print(json.dumps({{"left": left, "folder": result.params["lazy"].get("temporary"),
                   "out": result.params["lazy"]["out"], "sum": float(result.map.sum())}}))
"""
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert list(seen["left"].values()) == [["map.zarr"]]  # the region's store went with the run
    assert list(scratch.iterdir()) == []  # and the map's went when Python exited
    assert seen["folder"] == str(scratch / next(iter(seen["left"])))  # said in provenance
    assert seen["out"] == os.path.join(seen["folder"], "map.zarr") and seen["sum"] > 0


@pytest.mark.parametrize("blend,output", [("gaussian", "softmax"), ("constant", "sigmoid")])
def test_segment_model_lazy_equals_segment_with_model(net, volume, blend, output, tmp_path):
    import zarr

    from napari_xaimed.segmentation import segment_model_lazy, segment_with_model

    expected = segment_with_model(volume, net, roi_size=ROI, overlap=0.25, blend=blend,
                                  output=output, device="cpu",
                                  preprocessing={"scaling": "zscore"})
    store = write_zarr(tmp_path / "ct.zarr", volume, spacing=(1.0, 1.0, 1.0),
                       chunks=(4, 40, 40))
    result = segment_model_lazy(zarr.open_group(str(store), mode="r")["0"], net,
                                tmp_path / "labels.zarr", roi_size=ROI, overlap=0.25,
                                blend=blend, output=output, device="cpu", slab=5,
                                preprocessing={"scaling": "zscore"},
                                probability_out=tmp_path / "p.zarr")
    assert result.params["bands"] > 1
    np.testing.assert_array_equal(result.labels.compute(), expected.labels)
    probability = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["0"][:]
    np.testing.assert_allclose(probability, expected.probability, atol=1e-5)
