"""Each sample's truth is consistent with its data."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed import XaimedError, samples


def test_lesion_volume_is_seeded():
    a, b, c = (samples.lesion_volume(seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lesion_mask_covers_the_lesions(seed):
    s = samples.lesion_volume(seed=seed, spacing=(1.5, 1.0, 1.0), shape=(48, 64, 64))
    n = len(s.radii_mm)
    assert s.label == 1 and s.lesions.max() == n
    assert s.image.dtype == np.float32 and s.image.shape == (48, 64, 64)
    tissue = s.image[s.body & ~s.mask]
    for i, (center, radius) in enumerate(zip(s.centers_mm, s.radii_mm, strict=True), start=1):
        idx = tuple(int(round(c / sp)) for c, sp in zip(center, s.spacing, strict=True))
        assert s.lesions[idx] == i  # the centre voxel carries the lesion's label
        volume_mm3 = (s.lesions == i).sum() * np.prod(s.spacing)
        assert volume_mm3 == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.2)
        # the lesion is brighter than the tissue around it, by about the contrast asked for
        assert s.image[s.lesions == i].mean() > np.percentile(tissue, 90)
    assert s.mask[~s.body].sum() == 0  # lesions lie inside the body


def test_lesion_free_volume_is_class_zero():
    s = samples.lesion_volume(n_lesions=0, seed=5)
    assert s.label == 0 and not s.mask.any()


def warp_with(moving, displacement, spacing, order=1):
    """Pull-back resampling: out(p) = moving(p + u(p)), p and u in mm."""
    grid = np.indices(moving.shape, dtype=np.float64)
    coords = grid + np.moveaxis(displacement, -1, 0) / np.asarray(spacing)[:, None, None, None]
    return ndi.map_coordinates(moving, coords, order=order, mode="nearest")


def dice(a, b):
    return 2 * np.sum(a & b) / (a.sum() + b.sum())


@pytest.mark.parametrize("spacing", [(1.5, 1.0, 1.0), (1.0, 1.0, 1.0)])
def test_known_displacement_maps_moving_onto_fixed(spacing):
    clean = samples.longitudinal_pair(spacing=spacing, seed=1, noise=0.0)
    assert clean.displacement.shape == (*clean.fixed.shape, 3)
    body = clean.body
    warped = warp_with(clean.moving, clean.displacement, clean.spacing)
    err_warped = np.sqrt(np.mean((warped[body] - clean.fixed[body]) ** 2))
    err_identity = np.sqrt(np.mean((clean.moving[body] - clean.fixed[body]) ** 2))
    # without noise only linear interpolation error is left
    assert err_warped < 0.2 * err_identity
    # with the default noise (0.02 per scan) the residual is the noise of the two scans
    s = samples.longitudinal_pair(spacing=spacing, seed=1)
    warped = warp_with(s.moving, s.displacement, s.spacing)
    residual = np.sqrt(np.mean((warped[body] - s.fixed[body]) ** 2))
    assert residual < 1.25 * np.sqrt(2) * 0.02
    for label in (1, 2, 3):
        moved = warp_with((s.moving_labels == label).astype(float), s.displacement, s.spacing) > 0.5
        assert dice(moved, s.fixed_labels == label) > 0.9
        assert dice(moved, s.fixed_labels == label) > dice(s.moving_labels == label,
                                                           s.fixed_labels == label)


def test_new_lesion_appears_in_the_current_scan_only():
    plain = samples.longitudinal_pair(seed=1, noise=0.0)
    changed = samples.longitudinal_pair(seed=1, noise=0.0, new_lesion_radius_mm=5.0)
    assert plain.new_lesion is None
    # the prior, the field and the labels are those of the same seed without the lesion
    np.testing.assert_array_equal(changed.moving, plain.moving)
    np.testing.assert_array_equal(changed.displacement, plain.displacement)
    np.testing.assert_array_equal(changed.fixed_labels, plain.fixed_labels)
    lesion = changed.new_lesion
    assert lesion.any() and not (lesion & ~changed.body).any()
    # about a ball of 5 mm radius, in voxels of the sample's spacing
    expected = 4 / 3 * np.pi * 5.0**3 / np.prod(changed.spacing)
    assert 0.8 * expected < lesion.sum() < 1.2 * expected
    # brighter inside the lesion, unchanged away from it (beyond its soft edge)
    difference = changed.fixed - plain.fixed
    assert difference[lesion].mean() > 0.3
    far = ndi.distance_transform_edt(~lesion, sampling=changed.spacing) > 4.0
    assert np.abs(difference[far]).max() < 1e-4  # the tanh edge has decayed


def test_displacement_is_smooth_and_fold_free():
    s = samples.longitudinal_pair(seed=2)
    u = s.displacement.astype(np.float64)
    grads = np.stack([np.stack(np.gradient(u[..., c], *s.spacing), -1) for c in range(3)], -2)
    det = np.linalg.det(np.eye(3) + grads)
    assert det.min() > 0.2
    magnitude = np.linalg.norm(u, axis=-1)
    assert 0.5 < magnitude.mean() and magnitude.max() < 12.0


def test_panoptic_pair_has_every_kind_of_error():
    s = samples.panoptic_pair(seed=0)
    table = samples.overlap_table(s.reference, s.prediction)
    refs = set(np.unique(s.reference)) - {0}
    preds = set(np.unique(s.prediction)) - {0}
    preds_of = {r: {p for (rr, p) in table if rr == r} for r in refs}
    refs_of = {p: {r for (r, pp) in table if pp == p} for p in preds}
    splits = {r for r, ps in preds_of.items() if len(ps) >= 2}
    merges = {p for p, rs in refs_of.items() if len(rs) >= 2}
    misses = {r for r, ps in preds_of.items() if not ps}
    false_positives = {p for p, rs in refs_of.items() if not rs}
    assert splits and merges and misses and false_positives
    assert splits == set(s.events["split"])
    assert merges == set(s.events["merge"])
    assert misses == set(s.events["miss"])
    assert false_positives == set(s.events["false_positive"])
    # a semantic evaluation finds the same instances by connected components
    _, n_ref = samples.connected_instances(s.reference > 0)
    _, n_pred = samples.connected_instances(s.prediction > 0)
    assert n_ref == len(refs) and n_pred == len(preds)
    # the split pieces are both sizeable, so matching strategies have something to decide
    pieces = [table[(1, p)] for p in s.split_pieces[1]]
    assert min(pieces) / sum(pieces) > 0.2


def test_panoptic_parts_lie_inside_their_things():
    s = samples.panoptic_pair(seed=1, spacing=(2.0, 1.0, 1.0), shape=(40, 64, 64), n_things=6)
    for instances, semantic in ((s.reference, s.reference_semantic),
                                (s.prediction, s.prediction_semantic)):
        np.testing.assert_array_equal(semantic > 0, instances > 0)
        cores = np.unique(instances[semantic == 2])
        assert len(cores) >= len(np.unique(instances)) - 2  # nearly every thing has a core
    assert s.parts == {"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}


def test_samples_refuse_bad_sizes():
    with pytest.raises(XaimedError, match="shape"):
        samples.lesion_volume(shape=(64, 64))
    with pytest.raises(XaimedError, match="spacing"):
        samples.longitudinal_pair(spacing=(1.0, 0.0, 1.0))
    with pytest.raises(XaimedError, match="n_things"):
        samples.panoptic_pair(n_things=3)
