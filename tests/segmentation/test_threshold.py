"""Threshold and Otsu segmentation, and instance splitting."""

import numpy as np
import pytest
from skimage.filters import threshold_multiotsu, threshold_otsu

from napari_xaimed import XaimedError, samples
from napari_xaimed.segmentation import otsu_threshold, segment, split_instances


def test_otsu_equals_scikit_image():
    image = samples.lesion_volume(seed=0).image
    assert otsu_threshold(image) == pytest.approx(threshold_otsu(image))
    assert otsu_threshold(image, classes=3) == pytest.approx(threshold_multiotsu(image, 3)[-1])


def test_min_size_is_in_cubic_millimetres():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6:8, 6:8, 6:8] = True  # 8 voxels
    # at 2 x 1 x 1 mm the small cube is 16 mm^3 and the large one 54 mm^3
    labels = split_instances(mask, spacing=(2.0, 1.0, 1.0), min_size_mm3=20.0)
    assert labels.max() == 1 and labels[2, 2, 2] == 1 and labels[7, 7, 7] == 0
    assert split_instances(mask, spacing=(2.0, 1.0, 1.0), min_size_mm3=10.0).max() == 2


def test_connectivity():
    mask = np.zeros((3, 3, 3), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner neighbours
    assert split_instances(mask, connectivity=26).max() == 1
    assert split_instances(mask, connectivity=6).max() == 2
    with pytest.raises(XaimedError, match="connectivity"):
        split_instances(mask, connectivity=8)


@pytest.mark.parametrize("seed", [0, 3])
def test_multi_otsu_finds_the_sample_lesions(seed):
    s = samples.lesion_volume(seed=seed)
    labels = segment(s.image, "otsu", spacing=s.spacing, classes=4, smoothing_mm=1.0,
                     min_size_mm3=20)
    found = labels > 0
    assert labels.max() == s.lesions.max()
    assert 2 * (found & s.mask).sum() / (found.sum() + s.mask.sum()) > 0.85


def test_threshold_by_value_and_percentile():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    assert (segment(volume, "threshold", value=899.5, instances=False) > 0).sum() == 100
    assert (segment(volume, "threshold", percentile=50, instances=False) > 0).sum() == 500


def test_bad_inputs():
    with pytest.raises(XaimedError, match="3D"):
        segment(np.zeros((5, 5)), "otsu")
    with pytest.raises(XaimedError, match="pick one channel"):
        segment(np.zeros((2, 5, 5, 5)), "otsu")
    nan = np.ones((5, 5, 5))
    nan[0, 0, 0] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        segment(nan, "otsu")
    with pytest.raises(XaimedError, match="constant"):
        segment(np.ones((5, 5, 5)), "otsu")
    with pytest.raises(XaimedError, match="available are"):
        segment(np.ones((5, 5, 5)), "watershed")
    with pytest.raises(XaimedError, match="does not take"):
        segment(np.ones((5, 5, 5)), "otsu", value=3)
