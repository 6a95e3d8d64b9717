"""KernelSHAP with cached sliding windows against Captum's KernelShap around MONAI's
sliding_window_inference (every window run for every sample)."""

import numpy as np
import pytest
import torch
from captum.attr import KernelShap
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from napari_xaimed import XaimedError
from napari_xaimed.attribution.kernel_shap import CachedWindowScore, kernel_shap_windows

ROI = (16, 16, 16)


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    net = UNet(3, 1, 2, channels=(4, 8), strides=(2,), num_res_units=0).eval().double()
    volume = np.random.default_rng(0).normal(size=(16, 40, 40))
    region = np.zeros(volume.shape, bool)
    region[4:10, 10:16, 10:16] = True  # reaches the windows starting at y, x in {0, 12}
    return net, volume, region


class Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.windows = net, 0

    def forward(self, x):
        self.windows += x.shape[0]
        return self.net(x)


def _captum_reference(net, volume, region, result, samples, batch):
    """Captum's KernelShap on the same crop, feature mask, samples and seed, each sample
    scored by MONAI's full sliding-window inference."""
    x = torch.as_tensor(volume)[None, None]
    mask = torch.as_tensor(region)

    def forward(crops):
        scores = []
        for crop in crops:
            full = x.clone()
            full[(0, slice(None), *result.box)] = crop
            out = sliding_window_inference(full, ROI, 4, net, overlap=0.25)
            scores.append((out[0, 1] * mask).sum())
        return torch.stack(scores)

    crop = x[(slice(None), slice(None), *result.box)]
    features = torch.as_tensor(result.feature_mask)[None, None].expand_as(crop)
    torch.manual_seed(3)
    values = KernelShap(forward).attribute(crop, baselines=0.0, feature_mask=features,
                                           n_samples=samples, perturbations_per_eval=batch)
    full = np.zeros(volume.shape)
    full[result.box] = values[0].sum(0).detach().numpy()
    return full


def test_cached_kernel_shap_equals_captum_on_monai_sliding_windows(case):
    net, volume, region = case
    ours = kernel_shap_windows(net, volume, region, roi_size=ROI, supervoxels=8, samples=24,
                               margin=2, seed=3, batch_size=5)
    reference = _captum_reference(net, volume, region, ours, 24, 5)
    assert np.abs(reference).max() > 0
    np.testing.assert_allclose(ours.map, reference, rtol=1e-5, atol=1e-9 * np.abs(
        reference).max())
    outside = np.ones(volume.shape, bool)
    outside[ours.box] = False
    assert not ours.map[outside].any()  # nothing outside the box is perturbed


def test_the_cache_skips_untouched_windows(case):
    net, volume, region = case
    counted = Counting(net)
    cached = kernel_shap_windows(counted, volume, region, roi_size=ROI, supervoxels=8,
                                 samples=24, margin=2, seed=3, batch_size=5)
    assert counted.windows == cached.window_passes
    # 9 windows in all (y, x starts 0, 12, 24); 4 reach the region
    assert cached.windows == 9 and cached.active_windows == 4
    counted.windows = 0
    full = kernel_shap_windows(counted, volume, region, roi_size=ROI, supervoxels=8,
                               samples=24, margin=2, seed=3, batch_size=5, cache=False)
    # without the cache: the unperturbed pass, then the 4 windows for each of 24 samples
    assert counted.windows == full.window_passes == 4 * (1 + 24)
    assert cached.window_passes < full.window_passes
    np.testing.assert_allclose(cached.map, full.map, rtol=1e-9, atol=1e-12)


def test_one_perturbed_corner_reruns_only_its_window(case):
    net, volume, region = case
    counted = Counting(net)
    x = torch.as_tensor(volume)[None, None]
    box = (slice(2, 12), slice(8, 18), slice(8, 18))
    score = CachedWindowScore(counted, x, torch.as_tensor(region), 1, ROI, box)
    assert counted.windows == 4  # the unperturbed pass over the windows reaching the region
    crop = score.crop.clone()
    crop[..., 0:2, 0:2, 0:2] = 0.0  # y, x 8:10: inside the window at (0, 0, 0) only
    got = score(crop)
    assert counted.windows == 5
    full = x.clone()
    full[(0, slice(None), *box)] = crop[0]
    with torch.no_grad():
        out = sliding_window_inference(full, ROI, 4, net, overlap=0.25)
    expected = (out[0, 1] * torch.as_tensor(region)).sum()
    assert float(got[0]) == pytest.approx(float(expected), rel=1e-12)


def test_bad_inputs_are_refused(case):
    net, volume, region = case
    with pytest.raises(XaimedError, match="empty"):
        kernel_shap_windows(net, volume, np.zeros_like(region), roi_size=ROI)
    with pytest.raises(XaimedError, match="shape"):
        kernel_shap_windows(net, volume, region[:4], roi_size=ROI)
    with pytest.raises(XaimedError, match="kind"):
        kernel_shap_windows(net, volume, region, roi_size=ROI, kind="voronoi")
