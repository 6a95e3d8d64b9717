"""Voronoi regions: every voxel goes to its nearest reference voxel's instance (in mm), checked
against a brute-force search and against scipy's exact feature transform (what the regions were
computed with before), which both ways of computing them reproduce tie for tie."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed.evaluation import evaluate, nearest
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


def test_path_choice_does_not_depend_on_history(monkeypatch):
    """A small volume takes scipy also after a large one loaded the kernel in this process."""
    real = nearest._load_kernel
    real()  # as after a large volume
    loads = []
    monkeypatch.setattr(nearest, "_load_kernel", lambda: loads.append(1) or real())
    labels = np.zeros((10, 12, 14), np.uint16)
    labels[2, 3, 4], labels[7, 9, 10] = 1, 2
    np.testing.assert_array_equal(voronoi_regions(labels, (1.0, 1.0, 1.0)),
                                  scipy_regions(labels, (1.0, 1.0, 1.0)))
    assert not loads


def surface_lengths(source, target, spacing):
    """Per surface voxel of ``source`` (C order), the least length in mm of its integer offset
    to a surface voxel of ``target``; surfaces by scipy's erosion with a cross, the outside of
    the volume counting as background."""
    cross = ndi.generate_binary_structure(3, 1)
    a = np.argwhere(source & ~ndi.binary_erosion(source, cross, border_value=0))
    b = np.argwhere(target & ~ndi.binary_erosion(target, cross, border_value=0))
    offsets = b[None, :, :] - a[:, None, :]
    squared = np.zeros(offsets.shape[:2])
    for axis in range(3):
        squared += (offsets[..., axis] * spacing[axis]) ** 2
    return np.sqrt(squared.min(axis=1))


@pytest.mark.parametrize("dense", [False, True])
def test_region_rows_equal_a_brute_force_per_region(dense):
    """Every region's distance metrics from its masks built anew (regions by scipy's feature
    transform, all offsets measured), whether the region rows are measured all at once (sparse
    foreground) or crop by crop (dense)."""
    rng = np.random.default_rng(11)
    spacing = (1.5, 1.0, 0.8)
    shape = (18, 20, 22)
    ref = random_instances(rng, shape, 9)
    pred = np.zeros(shape, np.int32)
    for k, value in enumerate(np.unique(ref)[1:]):  # each shifted a little, some missed
        if k % 4 == 3:
            continue
        pred[np.roll(ref == value, tuple(rng.integers(-1, 2, 3)), axis=(0, 1, 2))] = k + 1
    pred[2:5, 15:19, 1:4] = 50  # a false positive inside some region
    if dense:
        pred[9:, :, :] = np.where(pred[9:, :, :] == 0, 60, pred[9:, :, :])
    fg_share = max(np.count_nonzero(ref), np.count_nonzero(pred)) / ref.size
    assert (fg_share > 0.125) == dense  # the evaluation's sparse/dense switch
    wanted = ("hd", "hd95", "hd95_directed", "assd", "nsd")
    result = evaluate(ref, pred, instance_input=True, voronoi=True, spacing=spacing,
                      metrics=wanted, nsd_tolerance_mm=1.2)["all"]
    regions = scipy_regions(ref, spacing)
    rows = {row["reference_id"]: row for row in result.regions}
    assert sorted(rows) == np.unique(ref)[1:].tolist()
    measured = 0
    for value, row in rows.items():
        ref_mask, pred_mask = ref == value, (pred > 0) & (regions == value)
        assert row["prediction_voxels"] == np.count_nonzero(pred_mask)
        if not pred_mask.any():
            assert all(np.isnan(row[m]) for m in wanted)
            continue
        a = surface_lengths(ref_mask, pred_mask, spacing)
        b = surface_lengths(pred_mask, ref_mask, spacing)
        pooled = np.concatenate([a, b])
        expected = {"hd": max(a.max(), b.max()), "hd95": np.percentile(pooled, 95),
                    "hd95_directed": max(np.percentile(a, 95), np.percentile(b, 95)),
                    "assd": (a.mean() + b.mean()) / 2,
                    "nsd": np.count_nonzero(pooled.astype(np.float32) <= np.float32(1.2))
                    / pooled.size}
        for m in wanted:
            assert row[m] == expected[m], (value, m)
        measured += 1
    assert measured >= 5
