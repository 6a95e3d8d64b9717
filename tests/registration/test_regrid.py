"""A volume resampled onto another grid of the same world (the action the grid checks advise),
against SimpleITK's Resample with an identity transform."""

import numpy as np
import pytest
import SimpleITK as sitk

from napari_xaimed import XaimedError
from napari_xaimed.io.grid import Grid
from napari_xaimed.registration.regrid import resample_onto

SOURCE = Grid((12, 14, 16), (2.0, 1.5, 1.2), (-3.1, 4.2, 0.7))
TARGET = Grid((20, 18, 22), (1.1, 1.3, 0.9), (-1.7, 5.05, 1.33))


def sitk_resample(data, source, target, interpolator):
    """SimpleITK's answer: images in (x, y, z) order, identity transform, 0 outside."""
    image = sitk.GetImageFromArray(data)  # numpy (z, y, x) -> ITK (x, y, z)
    image.SetSpacing(source.spacing[::-1])
    image.SetOrigin(source.translate[::-1])
    ref = sitk.Image(*target.shape[::-1], image.GetPixelID())
    ref.SetSpacing(target.spacing[::-1])
    ref.SetOrigin(target.translate[::-1])
    out = sitk.Resample(image, ref, sitk.Transform(), interpolator, 0.0)
    return sitk.GetArrayFromImage(out)


def inside(source, target):
    """Target voxels whose centre maps strictly inside the source's voxel-centre box (edge
    handling differs between libraries: SimpleITK extends half a voxel)."""
    idx = np.indices(target.shape, dtype=float)
    ok = np.ones(target.shape, bool)
    for axis in range(3):
        world = target.translate[axis] + idx[axis] * target.spacing[axis]
        at = (world - source.translate[axis]) / source.spacing[axis]
        ok &= (at > 0) & (at < source.shape[axis] - 1)
    return ok


def test_linear_matches_simpleitk():
    rng = np.random.default_rng(0)
    data = rng.normal(size=SOURCE.shape).astype(np.float32)
    ours = resample_onto(data, SOURCE, TARGET, interpolation="linear")
    want = sitk_resample(data, SOURCE, TARGET, sitk.sitkLinear)
    mask = inside(SOURCE, TARGET)
    assert ours.shape == TARGET.shape and ours.dtype == np.float32 and mask.sum() > 1000
    np.testing.assert_allclose(ours[mask], want[mask], atol=1e-5)


def test_nearest_keeps_label_values_and_matches_simpleitk():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, size=SOURCE.shape).astype(np.uint8) * 7
    ours = resample_onto(labels, SOURCE, TARGET, interpolation="nearest")
    want = sitk_resample(labels, SOURCE, TARGET, sitk.sitkNearestNeighbor)
    mask = inside(SOURCE, TARGET)
    assert ours.dtype == np.uint8 and set(np.unique(ours)) <= set(np.unique(labels))
    np.testing.assert_array_equal(ours[mask], want[mask])


def test_grids_with_other_axis_directions_are_refused():
    flipped = np.diag([-1.0, 1.0, 1.0])
    source = Grid(SOURCE.shape, SOURCE.spacing, SOURCE.translate, np.eye(3))
    target = Grid(TARGET.shape, TARGET.spacing, TARGET.translate, flipped)
    with pytest.raises(XaimedError, match="point different ways.*SimpleITK"):
        resample_onto(np.zeros(SOURCE.shape), source, target)
    with pytest.raises(XaimedError, match="shape"):
        resample_onto(np.zeros((3, 3, 3)), SOURCE, TARGET)
    with pytest.raises(XaimedError, match="interpolation"):
        resample_onto(np.zeros(SOURCE.shape), SOURCE, TARGET, interpolation="cubic")
