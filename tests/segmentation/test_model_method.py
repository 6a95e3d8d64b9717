"""``segment(method="model")``: the registry entry for the user's model."""

import numpy as np
import pytest

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import run_steps
from napari_xaimed.samples import lesion_volume
from napari_xaimed.segmentation import segment, segment_steps, segment_with_model


def test_model_method_equals_segment_with_model_and_keeps_the_probability():
    sample = lesion_volume(seed=11, n_lesions=2, spacing=(1.5, 1.0, 1.0))
    result = run_steps(segment_steps(sample.image, "model", spacing=sample.spacing,
                                     roi_size=32, overlap=0.5))
    direct = segment_with_model(sample.image, "bundled-segmenter", spacing=sample.spacing,
                                roi_size=32, overlap=0.5)
    np.testing.assert_array_equal(result.labels, direct.labels)
    np.testing.assert_allclose(result.probabilities[0], direct.probability)
    assert result.kind == "classes" and result.facts["probabilities"] == "foreground"
    assert result.facts["windows"] == direct.windows > 1
    np.testing.assert_array_equal(segment(sample.image, "model", spacing=sample.spacing,
                                          roi_size=32, overlap=0.5), direct.labels)


def test_model_method_refuses_the_clean_up_parameters_of_mask_methods():
    sample = lesion_volume(seed=12)
    with pytest.raises(XaimedError, match="does not take min_size_mm3"):
        segment(sample.image, "model", min_size_mm3=10)
