"""Voronoi regions: every voxel goes to its nearest reference voxel's instance (in mm), checked
against a brute-force search and against scipy's exact feature transform (what the regions were
computed with before), which both ways of computing them reproduce tie for tie."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed.evaluation import nearest
from napari_xaimed.evaluation.nearest import nearest_labels
from napari_xaimed.evaluation.voronoi import voronoi_regions

SPACINGS = [(1.0, 1.0, 1.0), (1.5, 1.0, 0.8), (0.7, 2.0, 0.7)]


def scipy_regions(labels, spacing):
    """The regions as scipy's feature transform gives them (the former implementation)."""
    indices = ndi.distance_transform_edt(labels == 0, sampling=spacing, return_distances=False,
                                         return_indices=True)
    return labels[tuple(indices)]


def brute_force(labels, spacing):
    """Per voxel: the labels of every labelled voxel at the least distance (a set, for ties),
    from integer offsets times the spacing."""
    points = np.argwhere(labels)
    values = labels[tuple(points.T)]
    grid = np.indices(labels.shape).reshape(3, -1).T
    d2 = ((((grid[:, None, :] - points[None]) * np.asarray(spacing)) ** 2).sum(-1))
    least = d2.min(axis=1, keepdims=True)
    nearest_mask = d2 <= least * (1 + 1e-12)
    return [set(values[row].tolist()) for row in nearest_mask]


def random_instances(rng, shape, n, dtype=np.int32):
    """``n`` random boxes and single voxels with ids scattered over 1..1000 (overlaps keep the
    later id)."""
    labels = np.zeros(shape, dtype)
    for value in rng.choice(np.arange(1, 1000), n, replace=False):
        lo = rng.integers(0, shape)
        hi = np.minimum(lo + rng.integers(1, 4, 3), shape)
        labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return labels


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("spacing", SPACINGS)
def test_regions_are_the_nearest_reference_instance(kernel, spacing):
    rng = np.random.default_rng(7)
    ties = 0
    for _ in range(4):
        labels = random_instances(rng, (9, 11, 13), int(rng.integers(2, 7)))
        regions = nearest_labels(labels, spacing, kernel=kernel)
        for voxel, candidates in zip(regions.ravel().tolist(), brute_force(labels, spacing),
                                     strict=True):
            assert voxel in candidates
            ties += len(candidates) > 1
    if spacing == (1.0, 1.0, 1.0):
        assert ties > 50  # equidistant voxels are common on an isotropic grid: ties are tested


@pytest.mark.parametrize("spacing", SPACINGS)
def test_regions_equal_scipys_feature_transform_tie_for_tie(spacing):
    rng = np.random.default_rng(3)
    for dtype, shape, n in ((np.uint16, (40, 48, 44), 30), (np.int64, (23, 31, 37), 8),
                            (np.uint8, (50, 20, 30), 3)):
        labels = random_instances(rng, shape, n, dtype)
        expected = scipy_regions(labels, spacing)
        for kernel in (True, False):
            regions = nearest_labels(labels, spacing, kernel=kernel)
            assert regions.dtype == labels.dtype
            np.testing.assert_array_equal(regions, expected)


@pytest.mark.parametrize("shape", [(1, 17, 19), (15, 1, 1), (1, 1, 9), (6, 1, 7), (1, 1, 1)])
def test_thin_volumes(shape):
    rng = np.random.default_rng(sum(shape))
    labels = np.zeros(shape, np.int32)
    labels.flat[rng.choice(labels.size, min(3, labels.size), replace=False)] = [5, 9, 2][
        :min(3, labels.size)]
    for kernel in (True, False):
        np.testing.assert_array_equal(nearest_labels(labels, (2.0, 0.5, 1.0), kernel=kernel),
                                      scipy_regions(labels, (2.0, 0.5, 1.0)))


def test_large_volumes_take_the_kernel(monkeypatch):
    loads = []
    real = nearest._load_kernel
    monkeypatch.setattr(nearest, "_kernel", None)
    monkeypatch.setattr(nearest, "_load_kernel", lambda: loads.append(1) or real())
    labels = np.zeros((10, 12, 14), np.uint16)
    labels[2, 3, 4], labels[7, 9, 10] = 1, 2
    monkeypatch.setattr(nearest, "KERNEL_VOXELS", labels.size + 1)
    np.testing.assert_array_equal(voronoi_regions(labels, (1.0, 1.0, 1.0)),
                                  scipy_regions(labels, (1.0, 1.0, 1.0)))
    assert not loads  # small volume, kernel not loaded in this process: scipy
    monkeypatch.setattr(nearest, "KERNEL_VOXELS", labels.size)
    np.testing.assert_array_equal(voronoi_regions(labels, (1.0, 1.0, 1.0)),
                                  scipy_regions(labels, (1.0, 1.0, 1.0)))
    assert loads
    np.testing.assert_array_equal(voronoi_regions(np.zeros((3, 3, 3), np.uint16), (1, 1, 1)),
                                  np.zeros((3, 3, 3)))
