"""Multi-Otsu classes, hole filling and opening in mm, watershed splitting, instance sizes."""

import numpy as np
import pytest
from skimage.filters import threshold_multiotsu

from napari_xaimed import XaimedError, samples
from napari_xaimed._core.progress import run_steps
from napari_xaimed.segmentation import (
    METHODS,
    method_params,
    segment,
    segment_steps,
    split_instances,
)
from napari_xaimed.segmentation.morphology import ellipsoid_footprint

ANISO = (2.0, 1.0, 1.0)


def grid_mm(shape, spacing):
    return np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)],
                                indexing="ij"), -1)


def ball(points, centre, radius):
    return ((points - np.asarray(centre, float)) ** 2).sum(-1) <= radius**2


def test_multi_otsu_classes_follow_scikit_image_thresholds():
    image = samples.lesion_volume(seed=1).image
    result = run_steps(segment_steps(image, "multiotsu", classes=3))
    t1, t2 = threshold_multiotsu(image, classes=3)
    expected = np.where(image <= t1, 1, np.where(image <= t2, 2, 3))
    np.testing.assert_array_equal(result.labels, expected)
    assert result.facts["thresholds"] == pytest.approx([t1, t2])
    assert result.kind == "classes" and result.probabilities is None
    # classes ordered by intensity: each class's mean is above the previous one's
    means = [image[result.labels == k].mean() for k in (1, 2, 3)]
    assert means == sorted(means)


def test_footprint_is_a_ball_in_millimetres():
    fp = ellipsoid_footprint(3.0, ANISO)
    assert fp.shape == (3, 7, 7)  # 1 voxel of 2 mm either side in z, 3 of 1 mm in y and x
    expected = np.zeros(fp.shape, bool)
    for z, y, x in np.ndindex(fp.shape):
        expected[z, y, x] = ((z - 1) * 2.0) ** 2 + (y - 3) ** 2 + (x - 3) ** 2 <= 9.0
    np.testing.assert_array_equal(fp, expected)


def test_opening_removes_what_a_ball_of_that_radius_does_not_fit():
    # slabs of several thicknesses along z (2 mm voxels) and along x (1 mm voxels)
    volume = np.zeros((40, 30, 60), np.float32)
    volume[2:4, 5:25, 5:25] = 1  # 2 voxels = 4 mm thick in z: thinner than a 6 mm ball
    volume[8:11, 5:25, 5:25] = 1  # 3 voxels = 6 mm: the ball just fits
    volume[15:35, 5:25, 30:36] = 1  # 6 mm thick in x: thinner than the 7-voxel footprint
    volume[15:35, 5:25, 45:52] = 1  # 7 mm in x: fits
    labels = segment(volume, "threshold", spacing=ANISO, value=0.5, opening_mm=3.0,
                     instances=False)
    # thin slabs vanish; in thick ones every voxel a placed ball reaches stays (only the rims,
    # which a ball cannot reach, are rounded off)
    assert not labels[2:4].any() and labels[8:11, 8:22, 8:22].all()
    assert not labels[15:35, 5:25, 30:36].any() and labels[17:33, 8:22, 45:52].all()
    assert (labels <= (volume > 0.5)).all()  # an opening never adds voxels
    kept = segment(volume, "threshold", spacing=ANISO, value=0.5, instances=False)
    assert kept.sum() == (volume > 0.5).sum()  # off by default


def test_hole_filling_fills_cavities_not_open_cups():
    points = grid_mm((24, 40, 40), ANISO)
    shell = ball(points, (24, 20, 20), 12) & ~ball(points, (24, 20, 20), 6)
    volume = shell.astype(np.float32)
    filled = segment(volume, "threshold", spacing=ANISO, value=0.5, fill_holes=True,
                     instances=False)
    np.testing.assert_array_equal(filled > 0, ball(points, (24, 20, 20), 12))
    # a cavity opened to the outside by a tunnel is not a hole
    tunnel = shell.copy()
    tunnel[12:, 19:22, 19:22] = False
    out = segment(tunnel.astype(np.float32), "threshold", spacing=ANISO, value=0.5,
                  fill_holes=True, instances=False)
    np.testing.assert_array_equal(out > 0, tunnel)


def test_watershed_splits_two_touching_balls_and_leaves_one_alone():
    points = grid_mm((30, 60, 80), ANISO)
    two = ball(points, (30, 30, 25), 10) | ball(points, (30, 30, 42), 10)
    assert split_instances(two, ANISO).max() == 1  # touching: one component
    labels = split_instances(two, ANISO, split="watershed", min_distance_mm=5.0)
    assert labels.max() == 2
    left, right = labels[15, 30, 25], labels[15, 30, 42]  # the two centres
    assert {left, right} == {1, 2}
    # the cut runs through the neck, halfway between the centres (x = 33.5 mm)
    x = points[..., 2]
    assert (labels[two & (x < 32)] == left).all() and (labels[two & (x > 35)] == right).all()
    one = ball(points, (30, 30, 40), 12)
    assert split_instances(one, ANISO, split="watershed", min_distance_mm=5.0).max() == 1
    via_segment = segment(two.astype(np.float32), "threshold", spacing=ANISO, value=0.5,
                          split="watershed", min_distance_mm=5.0)
    np.testing.assert_array_equal(via_segment, labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_watershed_splits_the_panoptic_merge(seed):
    pan = samples.panoptic_pair(seed=seed)
    (merged_id, reference_ids), = pan.events["merge"].items()
    blob = pan.prediction == merged_id
    labels = split_instances(blob, pan.spacing, split="watershed", min_distance_mm=3.0)
    assert labels.max() == len(reference_ids) == 2
    for rid in reference_ids:  # each piece sits mostly on one of the merged references
        inside = labels[pan.reference == rid]
        assert np.bincount(inside[inside > 0]).max() > 0.9 * (pan.reference == rid).sum()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_instance_counts_and_sizes_on_the_panoptic_sample(spacing):
    pan = samples.panoptic_pair(seed=0, spacing=spacing)
    voxel = float(np.prod(spacing))
    truth_sizes = np.bincount(pan.reference.ravel())[1:] * voxel
    labels = split_instances(pan.reference > 0, spacing, connectivity=6)
    found_sizes = np.bincount(labels.ravel())[1:] * voxel
    assert sorted(found_sizes) == sorted(truth_sizes)
    cut = float(np.median(truth_sizes))
    kept = split_instances(pan.reference > 0, spacing, min_size_mm3=cut)
    assert kept.max() == int((truth_sizes >= cut).sum())
    # the prediction's split pieces are apart, so each prediction id is one component
    assert split_instances(pan.prediction > 0, spacing).max() == len(np.unique(pan.prediction)) - 1


def test_instance_sizes_on_the_lesion_sample():
    s = samples.lesion_volume(seed=0, spacing=ANISO)
    labels = segment(s.image, "otsu", spacing=s.spacing, classes=4, smoothing_mm=1.0,
                     min_size_mm3=20)
    assert labels.max() == s.lesions.max()
    voxel = float(np.prod(ANISO))
    for lesion in range(1, s.lesions.max() + 1):
        truth = s.lesions == lesion
        found = np.bincount(labels[truth]).argmax()
        size, true_size = (labels == found).sum() * voxel, truth.sum() * voxel
        assert abs(size - true_size) < 0.25 * true_size


def test_parameters_are_checked_per_method():
    volume = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    with pytest.raises(XaimedError, match="does not take opening_mm"):
        segment(volume, "multiotsu", opening_mm=1.0)
    with pytest.raises(XaimedError, match="does not take n_classes"):
        segment(volume, "otsu", n_classes=3)
    with pytest.raises(XaimedError, match="opening_mm"):
        segment(volume, "otsu", opening_mm=-1.0)
    with pytest.raises(XaimedError, match="split"):
        segment(volume, "otsu", split="random_walker")
    with pytest.raises(XaimedError, match="min_distance_mm"):
        segment(volume, "otsu", split="watershed", min_distance_mm=0)
    with pytest.raises(XaimedError, match="classes"):
        segment(volume, "multiotsu", classes=1)
    assert "opening_mm" in method_params("threshold")
    assert "opening_mm" not in method_params("atropos")
    assert {"threshold", "otsu", "multiotsu", "kmeans", "atropos"} <= set(METHODS)


def test_slice_preview_equals_the_full_result_without_smoothing():
    from napari_xaimed.segmentation.preview import preview_slice

    s = samples.lesion_volume(seed=0, spacing=ANISO)
    for method, params in (("otsu", {"classes": 3, "opening_mm": 2.0}),
                           ("threshold", {"percentile": 97.0, "opening_mm": 1.0}),
                           ("multiotsu", {"classes": 3})):
        extra = {} if method == "multiotsu" else {"instances": False}
        full = segment(s.image, method, spacing=ANISO, **params, **extra)
        for z in (0, 31, 63):
            np.testing.assert_array_equal(preview_slice(s.image, z, method, ANISO, **params),
                                          full[z])
    with pytest.raises(XaimedError, match="no slice preview"):
        preview_slice(s.image, 3, "atropos", ANISO)
    with pytest.raises(XaimedError, match="outside"):
        preview_slice(s.image, 64, "otsu", ANISO)
