"""Our attributions equal Captum's for the same model, input and parameters."""

import captum.attr as ca
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_xaimed.attribution import METHODS, attribute

TARGET = 2


def captum_reference(method, model, x):
    """Captum called directly, as a user would."""
    xg = x.clone().requires_grad_(True)
    if method == "saliency":
        return ca.Saliency(model).attribute(xg, target=TARGET, abs=True)
    if method == "input_x_gradient":
        return ca.InputXGradient(model).attribute(xg, target=TARGET)
    if method == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(xg, baselines=torch.zeros_like(x),
                                                       target=TARGET, n_steps=8)
    if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        torch.manual_seed(0)
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(
            xg, nt_type=method, nt_samples=4, stdevs=0.1 * float(x.max() - x.min()),
            target=TARGET, abs=method == "smoothgrad")
    if method == "guided_backprop":
        return ca.GuidedBackprop(model).attribute(xg, target=TARGET)
    if method == "deeplift":
        return ca.DeepLift(model).attribute(xg, baselines=torch.zeros_like(x), target=TARGET)
    if method == "gradient_shap":
        torch.manual_seed(0)
        np.random.seed(0)  # noqa: NPY002 - Captum draws GradientSHAP's mixing coefficients from numpy
        return ca.GradientShap(model).attribute(
            xg, baselines=torch.zeros_like(x), n_samples=4,
            stdevs=0.1 * float(x.max() - x.min()), target=TARGET)
    # Grad-CAM's default layer: the last spatial feature map, relu2 (conv2 after activation)
    if method == "gradcam":
        cam = ca.LayerGradCam(model, model.relu2).attribute(xg, target=TARGET,
                                                            relu_attributions=True)
        return F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)
    if method == "guided_gradcam":
        return ca.GuidedGradCam(model, model.relu2).attribute(xg, target=TARGET,
                                                              interpolate_mode="trilinear")
    raise AssertionError(method)


PARAMS = {"integrated_gradients": {"steps": 8}, "smoothgrad": {"samples": 4},
          "smoothgrad_sq": {"samples": 4}, "vargrad": {"samples": 4},
          "gradient_shap": {"samples": 4}}


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients",
                                    "smoothgrad", "smoothgrad_sq", "vargrad",
                                    "guided_backprop", "deeplift", "gradient_shap", "gradcam",
                                    "guided_gradcam"])
def test_wrapped_methods_equal_captum(tiny, volume, method):
    ours = attribute(tiny, volume, method, target=TARGET, device="cpu", **PARAMS.get(method, {}))
    x = torch.from_numpy(volume)[None, None]
    theirs = captum_reference(method, tiny, x)[0, 0].detach().numpy()
    assert ours.map.shape == volume.shape
    np.testing.assert_allclose(ours.map, theirs, atol=1e-5, rtol=1e-5)
    assert ours.signed == METHODS[method].signed and ours.target == TARGET


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "gradcam"])
@pytest.mark.parametrize("layer", [None, "conv1"])
def test_single_pass_methods_backpropagate_from_the_check_and_equal_captum(
        tiny, volume, method, layer):
    """Saliency, input x gradient and Grad-CAM start from the checking pass (predicted target,
    or a target on a model not yet checked): one forward in all, Captum's map, the scores of
    that pass; the next call (checked, no probe) gives the same."""
    params = {"layer": layer} if method == "gradcam" else {}
    x = torch.from_numpy(volume)[None, None]
    predicted = int(tiny(x).argmax())
    calls = []
    hook = tiny.register_forward_hook(lambda *_: calls.append(1))
    first = attribute(tiny, volume, method, device="cpu", **params)
    assert len(calls) == 1
    second = attribute(tiny, volume, method, target=predicted, device="cpu", **params)
    assert len(calls) == 2
    hook.remove()
    xg = x.clone().requires_grad_(True)
    if method == "gradcam":
        cam = ca.LayerGradCam(tiny, getattr(tiny, layer or "relu2")).attribute(
            xg, target=predicted, relu_attributions=True)
        theirs = F.interpolate(cam, size=x.shape[2:], mode="trilinear", align_corners=False)
    else:
        theirs = (ca.Saliency(tiny).attribute(xg, target=predicted, abs=True)
                  if method == "saliency" else
                  ca.InputXGradient(tiny).attribute(xg, target=predicted))
    assert first.target == predicted and first.params["target"] == "predicted"
    np.testing.assert_allclose(first.map, theirs[0, 0].detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(first.map, second.map)
    assert first.scores == pytest.approx(tiny(x)[0].tolist(), abs=1e-6)
    assert second.scores == pytest.approx(first.scores)


@pytest.mark.parametrize("window, stride", [(4, 4), (5, 3)])
def test_batched_occlusion_equals_captum(tiny, volume, window, stride):
    ours = attribute(tiny, volume, "occlusion", target=TARGET, window=window, stride=stride,
                     batch_size=7, device="cpu")
    x = torch.from_numpy(volume)[None, None]
    theirs = ca.Occlusion(tiny).attribute(x, sliding_window_shapes=(1, window, window, window),
                                          strides=(1, stride, stride, stride), baselines=0.0,
                                          target=TARGET, perturbations_per_eval=5)
    np.testing.assert_allclose(ours.map, theirs[0, 0].numpy(), atol=1e-5)


def test_feature_ablation_equals_captum_on_the_same_supervoxels(tiny, volume):
    from napari_xaimed.attribution.methods import supervoxels

    ours = attribute(tiny, volume, "feature_ablation", target=TARGET, supervoxels=20,
                     device="cpu")
    x = torch.from_numpy(volume)[None, None]
    mask = torch.from_numpy(supervoxels(volume, 20))[None, None]
    theirs = ca.FeatureAblation(tiny).attribute(x, baselines=0.0, target=TARGET,
                                                feature_mask=mask)
    np.testing.assert_allclose(ours.map, theirs[0, 0].numpy(), atol=1e-5)


def test_kernel_shap_equals_captum_on_the_same_supervoxels_and_seed(tiny, volume):
    from scipy import ndimage as ndi

    from napari_xaimed.attribution.methods import supervoxels

    volume = ndi.gaussian_filter(volume, 2)  # SLIC finds one supervoxel in plain noise
    assert np.unique(supervoxels(volume, 12)).size > 2
    ours = attribute(tiny, volume, "kernel_shap", target=TARGET, supervoxels=12, samples=20,
                     batch_size=3, seed=5, device="cpu")
    x = torch.from_numpy(volume)[None, None]
    mask = torch.from_numpy(supervoxels(volume, 12))[None, None]
    torch.manual_seed(5)
    theirs = ca.KernelShap(tiny).attribute(x, baselines=0.0, target=TARGET, feature_mask=mask,
                                           n_samples=20)
    assert np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours.map, theirs[0, 0].numpy(), rtol=1e-4, atol=1e-6)
    assert ours.signed


def test_integrated_gradients_completeness(tiny, volume):
    ours = attribute(tiny, volume, "integrated_gradients", target=TARGET, steps=64,
                     device="cpu")
    x = torch.from_numpy(volume)[None, None]
    with torch.no_grad():
        gap = float(tiny(x)[0, TARGET] - tiny(torch.zeros_like(x))[0, TARGET])
    assert ours.map.sum() == pytest.approx(gap, rel=1e-2, abs=1e-4)


def test_lrp_on_3d_layers_conserves_relevance(tiny, volume):
    """Captum has no LRP rule for Conv3d; ours adds the epsilon rule. Without biases nothing
    absorbs relevance, so the input's relevance adds up to the explained score."""
    with torch.no_grad():
        for module in tiny.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    ours = attribute(tiny, volume, "lrp", target=TARGET, device="cpu")
    assert ours.map.shape == volume.shape and np.isfinite(ours.map).all()
    assert ours.map.sum() == pytest.approx(ours.scores[TARGET], rel=1e-3)


def test_out_of_memory_halves_the_batch_and_gives_the_same_map(tiny, volume):
    class Fussy(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.largest = model, 0

        def forward(self, x):
            if len(x) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            self.largest = max(self.largest, len(x))
            return self.model(x)

    fussy = Fussy(tiny)
    ours = attribute(fussy, volume, "occlusion", target=TARGET, window=4, stride=4,
                     batch_size=16, device="cpu")
    plain = attribute(tiny, volume, "occlusion", target=TARGET, window=4, stride=4,
                      device="cpu")
    np.testing.assert_allclose(ours.map, plain.map, atol=1e-6)
    assert fussy.largest == 2


class Residual(torch.nn.Module):
    """A skip connection from the input: no local chain to split off."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)
        self.fc = torch.nn.Linear(1, 2)

    def forward(self, x):
        y = self.conv(x) + x
        return self.fc(y.mean(dim=(2, 3, 4)))


def test_incremental_occlusion_splits_only_local_chains_and_equals_full(tiny, volume):
    from napari_xaimed.attribution.incremental import split_model

    split = split_model(tiny)
    assert split is not None and split.jump == (2, 2, 2) and split.field == (8, 8, 8)
    torch.manual_seed(0)
    residual = Residual().eval()
    assert split_model(residual) is None  # the head reads the input: runs in full
    for model in (tiny, residual):
        fast = attribute(model, volume, "occlusion", target=1, window=4, stride=2,
                         device="cpu")
        full = attribute(model, volume, "occlusion", target=1, window=4, stride=2,
                         incremental=False, device="cpu")
        np.testing.assert_allclose(fast.map, full.map, atol=1e-6)
        x = torch.from_numpy(volume)[None, None]
        captum = ca.Occlusion(model).attribute(x, sliding_window_shapes=(1, 4, 4, 4),
                                               strides=(1, 2, 2, 2), baselines=0.0, target=1)
        np.testing.assert_allclose(fast.map, captum[0, 0].numpy(), atol=1e-6)


class Unusual(torch.nn.Module):
    """Strided 1x1 convolution (skips voxels) and a padded pooling: the corner cases of the
    layer-by-layer path and of its crop fallback."""

    def __init__(self, pool_padding: int):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(1, 3, 1, stride=2)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool3d(3, stride=2, padding=pool_padding)
        self.conv2 = torch.nn.Conv3d(3, 4, 3, padding=1)
        self.gpool = torch.nn.AdaptiveMaxPool3d(1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv2(self.pool(self.act(self.conv1(x))))
        return self.fc(self.gpool(x).flatten(1))


@pytest.mark.parametrize("pool_padding", [0, 1])
def test_incremental_occlusion_corner_cases_equal_captum(volume, pool_padding):
    from napari_xaimed.attribution.incremental import split_model

    torch.manual_seed(2)
    model = Unusual(pool_padding).eval()
    assert split_model(model) is not None  # the incremental path runs, not a full fallback
    ours = attribute(model, volume, "occlusion", target=1, window=3, stride=2, device="cpu")
    x = torch.from_numpy(volume)[None, None]
    captum = ca.Occlusion(model).attribute(x, sliding_window_shapes=(1, 3, 3, 3),
                                           strides=(1, 2, 2, 2), baselines=0.0, target=1)
    np.testing.assert_allclose(ours.map, captum[0, 0].numpy(), atol=1e-6)


def test_occlusion_window_in_mm_maps_to_voxels_of_the_model_grid(tiny, volume):
    """4 mm windows at 2 mm voxels are 2-voxel windows; with a model input resized to half
    the volume, they are 1-voxel windows of that grid."""
    in_mm = attribute(tiny, volume, "occlusion", target=1, window=4.0, stride=4.0, unit="mm",
                      spacing=(2.0, 2.0, 2.0), device="cpu")
    in_voxels = attribute(tiny, volume, "occlusion", target=1, window=2, stride=2,
                          device="cpu")
    np.testing.assert_allclose(in_mm.map, in_voxels.map, atol=1e-7)


def test_captum_methods_retry_with_half_the_batch_on_out_of_memory(tiny, volume):
    class Fussy(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.sizes = model, []

        def forward(self, x):
            if len(x) > 4:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
            self.sizes.append(len(x))
            return self.model(x)

    fussy = Fussy(tiny)
    ours = attribute(fussy, volume, "integrated_gradients", target=1, steps=16,
                     batch_size=16, device="cpu")
    plain = attribute(tiny, volume, "integrated_gradients", target=1, steps=16,
                      batch_size=4, device="cpu")
    np.testing.assert_allclose(ours.map, plain.map, atol=1e-6)
    assert max(fussy.sizes) == 4 and ours.params["batch_size"] == 16


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_autocast_bf16_stays_close_to_full_precision(method):
    from napari_xaimed.samples import lesion_volume

    image = lesion_volume(seed=2, n_lesions=1).image
    full = attribute("bundled", image, method, target=1, device="cpu")
    mixed = attribute("bundled", image, method, target=1, device="cpu", autocast="bf16")
    assert mixed.params["autocast"] == "bf16"
    assert np.corrcoef(full.map.ravel(), mixed.map.ravel())[0, 1] > 0.95


def test_batched_ig_and_smoothgrad_equal_captum_batched(tiny, volume):
    """Our per-batch loops (progress and cancel between batches) give Captum's result with
    the same batch size."""
    x = torch.from_numpy(volume)[None, None]
    ours = attribute(tiny, volume, "integrated_gradients", target=TARGET, steps=8,
                     batch_size=3, device="cpu")
    theirs = ca.IntegratedGradients(tiny).attribute(
        x.clone().requires_grad_(True), baselines=torch.zeros_like(x), target=TARGET,
        n_steps=8, internal_batch_size=3)
    np.testing.assert_allclose(ours.map, theirs[0, 0].detach().numpy(), atol=1e-5, rtol=1e-5)
    for method in ("smoothgrad", "smoothgrad_sq"):
        ours = attribute(tiny, volume, method, target=TARGET, samples=7, batch_size=3,
                         device="cpu")
        torch.manual_seed(0)
        theirs = ca.NoiseTunnel(ca.Saliency(tiny)).attribute(
            x.clone().requires_grad_(True), nt_type=method, nt_samples=7,
            nt_samples_batch_size=3, stdevs=0.1 * float(x.max() - x.min()), target=TARGET,
            abs=method == "smoothgrad")
        np.testing.assert_allclose(ours.map, theirs[0, 0].detach().numpy(), atol=1e-5,
                                   rtol=1e-5)


def test_progress_counts_batches_and_closing_stops_between_them(tiny, volume):
    from napari_xaimed.attribution import attribute_steps

    steps = attribute_steps(tiny, volume, "integrated_gradients", target=TARGET, steps=8,
                            batch_size=2, device="cpu")
    reports = []
    for progress in steps:
        reports.append((progress.done, progress.total))
        if progress.total == 8 and progress.done == 4:
            break
    steps.close()  # a cancel: no error, nothing returned
    assert (2, 8) in reports and (4, 8) in reports and (8, 8) not in reports


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
@pytest.mark.parametrize("shape", [(12, 14, 16), (11, 13, 15)])
def test_batched_gradient_shap_equals_captum_in_one_call(tiny, batch_size, shape):
    """Captum's GradientShap has no batch size: ours splits the samples into passes but draws
    the baselines, noise and mixing coefficients as Captum's single call does, so any batch
    size gives Captum's map (also where the voxel count is no multiple of 16, which changes how
    torch fills normal noise in pieces)."""
    volume = torch.rand(shape, generator=torch.Generator().manual_seed(4)).numpy()
    ours = attribute(tiny, volume, "gradient_shap", target=TARGET, samples=5, noise=0.2,
                     baseline="blurred", batch_size=batch_size, seed=7, device="cpu")
    x = torch.from_numpy(volume)[None, None]
    from napari_xaimed.attribution.methods import baseline_tensor

    torch.manual_seed(7)
    np.random.seed(7)  # noqa: NPY002 - Captum draws from numpy's global RNG
    theirs = ca.GradientShap(tiny).attribute(
        x.clone().requires_grad_(True), baselines=baseline_tensor(x, "blurred"), n_samples=5,
        stdevs=0.2 * float(x.max() - x.min()), target=TARGET)
    np.testing.assert_allclose(ours.map, theirs[0, 0].detach().numpy(), atol=1e-5, rtol=1e-5)


def test_gradient_shap_reports_each_batch_and_stops_when_closed(tiny, volume):
    from napari_xaimed.attribution import attribute_steps

    class Counting(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.sizes = model, []

        def forward(self, x):
            self.sizes.append(len(x))
            return self.model(x)

    model = Counting(tiny)
    steps = attribute_steps(model, volume, "gradient_shap", target=TARGET, samples=7,
                            batch_size=3, device="cpu")
    reports = []
    for progress in steps:
        if progress.message.startswith("gradient_shap:") and "samples" in progress.message:
            reports.append((progress.done, progress.total))
            if progress.done == 3:
                break
    calls = len(model.sizes)
    steps.close()  # a cancel: the remaining batches never run
    assert reports == [(3, 7)] and len(model.sizes) == calls
    assert model.sizes[-1] == 3  # the gradient passes take the samples three at a time

    model.sizes.clear()
    done = [(p.done, p.total) for p in attribute_steps(
        model, volume, "gradient_shap", target=TARGET, samples=7, batch_size=3, device="cpu")
        if "samples" in p.message]
    assert done == [(3, 7), (6, 7), (7, 7)]
    start = model.sizes.index(3)  # after the probe pass of one volume
    assert model.sizes[start:start + 3] == [3, 3, 1]


def test_gradient_shap_out_of_memory_halves_the_batch_and_draws_the_same_samples(tiny, volume):
    class Fussy(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model, self.sizes = model, []

        def forward(self, x):
            if len(x) > 2:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
            self.sizes.append(len(x))
            return self.model(x)

    fussy = Fussy(tiny)
    ours = attribute(fussy, volume, "gradient_shap", target=TARGET, samples=6, batch_size=8,
                     seed=2, device="cpu")
    plain = attribute(tiny, volume, "gradient_shap", target=TARGET, samples=6, batch_size=6,
                      seed=2, device="cpu")
    np.testing.assert_allclose(ours.map, plain.map, atol=1e-6)
    assert max(fussy.sizes) == 2
