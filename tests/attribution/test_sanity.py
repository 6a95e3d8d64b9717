"""The cascading model-parameter randomisation test."""

import numpy as np
import pytest
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import load_model, randomisation_test
from napari_xaimed.explanations.sanity import map_ssim, parameter_layers


def test_layers_are_randomised_from_the_output_down(tiny):
    assert parameter_layers(tiny) == ["conv1", "conv2", "fc"]
    result = randomisation_test(tiny, np.random.default_rng(0).random((12, 14, 16)),
                                "saliency", target=0)
    assert result.layers == ["fc", "conv2", "conv1"]
    assert len(result.spearman) == len(result.ssim) == 3


def test_randomising_the_bundled_model_changes_its_gradient_map():
    from napari_xaimed.samples import lesion_volume

    sample = lesion_volume(seed=3, n_lesions=2)
    loaded = load_model("bundled")
    before = [p.detach().clone() for p in loaded.module.parameters()]
    result = randomisation_test(loaded, sample.image, "saliency", target=1, keep_maps=True)
    # the map moves away from the original as more of the model is destroyed
    assert result.spearman[-1] < 0.8
    assert result.ssim[-1] < 0.5
    assert result.ssim[0] > result.ssim[-1]
    assert len(result.maps) == 4 and result.maps[0].shape == sample.image.shape
    # the user's model is untouched
    for old, new in zip(before, loaded.module.parameters(), strict=True):
        assert torch.equal(old, new)


def test_ssim_of_a_map_with_itself_is_one_and_with_noise_is_low():
    rng = np.random.default_rng(0)
    smooth = np.fromfunction(lambda z, y, x: np.exp(-((z - 8) ** 2 + (y - 8) ** 2
                                                       + (x - 8) ** 2) / 20), (16, 16, 16))
    assert map_ssim(smooth, smooth) == pytest.approx(1.0)
    assert map_ssim(smooth, rng.random(smooth.shape)) < 0.3
    with pytest.raises(XaimedError, match="too small"):
        map_ssim(np.ones((2, 8, 8)), np.ones((2, 8, 8)))


def test_a_model_without_parameters_is_refused():
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    with pytest.raises(XaimedError, match="no layers with parameters"):
        randomisation_test(model, np.ones((8, 8, 8)), "saliency")
