"""The helpers that replaced repeated copies, each against a hand-computed case or a peer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import dice as scipy_dice_dissimilarity

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.evaluation.overlap import mask_dice


def test_mask_dice_hand_computed_and_scipy():
    a = np.zeros((2, 3, 4), np.uint8)
    b = np.zeros((2, 3, 4), np.int16)
    a[0, 0, :4] = 1  # 4 voxels
    b[0, 0, 1:4] = 7  # 3 of them, plus 3 more: 6 voxels
    b[1, 2, :3] = 2
    assert mask_dice(a, b) == pytest.approx(2 * 3 / (4 + 6))
    assert mask_dice(a, b) == pytest.approx(1 - scipy_dice_dissimilarity(a.ravel() > 0,
                                                                         b.ravel() > 0))
    assert mask_dice(a, a) == 1.0
    assert mask_dice(a, 1 - a) == 0.0


def test_mask_dice_empty_and_shape():
    assert mask_dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    with pytest.raises(XaimedError, match="differ in shape"):
        mask_dice(np.zeros((3, 3)), np.zeros((3, 4)))


def test_z_slabs_cover_the_depth_in_order():
    from napari_xaimed.io.lazy import slab_size, z_slabs

    assert list(z_slabs(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(z_slabs(3, 5)) == [(0, 3)]
    # 12 voxels a plane, about 25 voxels a slab: 2 planes (never fewer than one)
    assert slab_size((10, 3, 4), 1, budget=25) == 2
    assert slab_size((10, 3, 4), 1, budget=5) == 1
    # an empty volume has no slab (its slab size is 0)
    assert list(z_slabs(0, slab_size((0, 3, 4), 1, budget=25))) == []


@pytest.mark.parametrize("classes", [1, 0, 2.5, -3])
def test_otsu_classes_check_refuses(classes):
    from napari_xaimed.segmentation import otsu_threshold, otsu_threshold_lazy
    from napari_xaimed.segmentation.threshold import check_otsu_classes

    volume = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    for call in (lambda: check_otsu_classes(classes),
                 lambda: otsu_threshold(volume, classes=classes),
                 lambda: otsu_threshold_lazy(volume, classes=classes)):
        with pytest.raises(XaimedError, match="whole number of 2 or more for Otsu"):
            call()


def test_otsu_classes_check_accepts_whole_numbers():
    from napari_xaimed.segmentation.threshold import check_otsu_classes

    for classes in (2, 3, 4.0):
        check_otsu_classes(classes)


def test_sample_instances_are_scipy_26_components():
    from scipy import ndimage as ndi

    from napari_xaimed.samples import connected_instances

    mask = np.random.default_rng(3).random((12, 13, 14)) > 0.7
    labels, n = connected_instances(mask)
    expected, n_expected = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(("unit", "factor"), [("mm", 1.0), ("micron", 1e-3), ("meter", 1e3),
                                              ("unknown", 1.0)])
def test_nifti_zooms_mm_converts_the_spatial_three_only(unit, factor):
    import nibabel as nib

    from napari_xaimed.io import nifti_zooms_mm

    img = nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4))
    img.header.set_zooms((2.0, 3.0, 4.0, 0.5))  # x, y, z and a repetition time
    img.header.set_xyzt_units(xyz=unit, t="sec")
    assert nifti_zooms_mm(img.header) == pytest.approx([2.0 * factor, 3.0 * factor,
                                                        4.0 * factor, 0.5])


def test_timing_and_ratio_share_one_spread(monkeypatch):
    import importlib
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    timing = importlib.import_module("_timing")
    seconds = timing.Timing([0.004, 0.001, 0.0025])
    assert (seconds.median, seconds.low, seconds.high) == (0.0025, 0.001, 0.004)
    assert seconds.spread(1, scale=1000, unit=" ms") == "1.0-4.0 ms"
    assert seconds.spread(4, median=True) == "0.0025, 0.0010-0.0040"
    ratio = timing.Ratio(2.0, [1.5, 3.0, 2.0, 2.5])
    assert (ratio.median, ratio.low, ratio.high) == (2.25, 1.5, 3.0)
    assert ratio.spread(2, unit="x") == "1.50-3.00x"
    assert str(ratio) == "2.00x (1.50-3.00x)"
    assert isinstance(seconds, timing.Spread) and isinstance(ratio, timing.Spread)
