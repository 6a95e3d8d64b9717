"""Field helpers against hand-computed truths and scipy."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed import XaimedError
from napari_xaimed.registration import (
    displacement_vectors,
    jacobian_determinant,
    jacobian_summary,
    resample,
    warped_grid,
)
from napari_xaimed.registration.fields import _label_vote

SPACING = (2.0, 1.0, 0.5)


def affine_field(shape, spacing, matrix, shift):
    """u(p) = (A - I) p + t on the grid, in mm."""
    p = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)],
                             indexing="ij"), axis=-1)
    return (p @ (np.asarray(matrix) - np.eye(3)).T + shift).astype(np.float32)


def test_jacobian_of_an_affine_field_is_its_determinant():
    matrix = [[1.1, 0.05, 0.0], [0.0, 0.9, 0.1], [0.02, 0.0, 1.2]]
    field = affine_field((10, 12, 14), SPACING, matrix, (1.0, -2.0, 0.5))
    jac = jacobian_determinant(field, SPACING)
    np.testing.assert_allclose(jac, np.linalg.det(matrix), rtol=1e-5)


def test_hand_made_fold_is_reported_and_not_clamped():
    """u_x = -2 (x - c) inside a slab: p_x + u_x = -x + 2c, a mirror, det = -1 there."""
    shape, spacing = (8, 8, 20), (1.0, 1.0, 1.0)
    field = np.zeros(shape + (3,), np.float32)
    x = np.arange(20, dtype=np.float32)
    field[..., 2] = np.where((x >= 8) & (x <= 12), -2 * (x - 10), 0.0)
    jac = jacobian_determinant(field, spacing)
    assert jac.min() < 0  # ants.create_jacobian_determinant_image would clamp this to 0
    np.testing.assert_allclose(jac[:, :, 9:12], -1.0)
    summary = jacobian_summary(jac)
    assert summary["folded_voxels"] == np.count_nonzero(jac <= 0) >= 3 * 64
    assert 0 < summary["folded_percent"] < 100


def test_translation_resampling_has_the_pull_back_sign():
    """u = +2 voxels (1 mm at 0.5 mm spacing) in x: the fixed voxel x shows moving x + 2."""
    rng = np.random.default_rng(0)
    moving = rng.random((6, 7, 16)).astype(np.float32)
    field = np.zeros((6, 7, 16, 3), np.float32)
    field[..., 2] = 1.0
    geometry = dict(fixed_spacing=SPACING, fixed_origin=(0, 0, 0), moving_spacing=SPACING,
                    moving_origin=(0, 0, 0))
    out = resample(moving, moving.shape, field, **geometry)
    np.testing.assert_allclose(out[:, :, :-2], moving[:, :, 2:], atol=1e-6)
    assert np.all(out[:, :, -2:] == 0)  # outside the moving volume
    labels = (moving * 5).astype(np.uint8)
    for method in ("nearest", "label"):
        np.testing.assert_array_equal(resample(labels, labels.shape, field, interpolation=method,
                                               **geometry)[:, :, :-2], labels[:, :, 2:])


def test_identity_between_grids_of_different_spacing_and_origin():
    """No field: world coordinates alone take a coarse moving grid onto a finer fixed one."""
    moving = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    out = resample(moving, (7, 9, 11), None, fixed_spacing=(1, 1, 1), fixed_origin=(2, 0, 0),
                   moving_spacing=(2, 2, 2), moving_origin=(0, 0, 0))
    # fixed voxel (k, j, i) sits at world (2 + k, j, i) = moving index (1 + k/2, j/2, i/2)
    expected = ndi.map_coordinates(moving, np.mgrid[0:7, 0:9, 0:11] / 2.0 + [[[[1]]], [[[0]]],
                                                                           [[[0]]]], order=1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_label_vote_equals_one_hot_linear_argmax():
    rng = np.random.default_rng(1)
    labels = ndi.zoom(rng.integers(0, 5, (5, 5, 5)), 3, order=0).astype(np.uint16)
    labels[labels == 3] = 300  # ids need not be small or contiguous
    coords = rng.uniform(-1, 15.5, (3, 4000))
    ours = _label_vote(labels, coords.reshape(3, 40, 10, 10)).ravel()
    ids = np.unique(np.concatenate([[0], labels.ravel()]))
    shares = np.stack([ndi.map_coordinates((labels == i).astype(float), coords, order=1,
                                           mode="grid-constant", cval=float(i == 0))
                       for i in ids])
    np.testing.assert_array_equal(ours, ids[np.argmax(shares, axis=0)])


def test_vectors_are_voxel_projections_of_mm_displacements():
    field = np.zeros((8, 8, 8, 3), np.float32)
    field[..., 0] = 4.0  # 4 mm along z = 2 voxels at 2 mm
    data, lengths = displacement_vectors(field, step=4, spacing=SPACING)
    assert data.shape == (8, 2, 3)
    np.testing.assert_array_equal(np.unique(data[:, 0, 0]), [2, 6])  # half a step in
    np.testing.assert_allclose(data[:, 1], [[2.0, 0.0, 0.0]] * 8)
    np.testing.assert_allclose(lengths, 4.0)
    assert displacement_vectors(field, 4, SPACING, min_mm=5.0)[0].shape == (0, 2, 3)


def test_warped_grid_lines_move_with_the_field():
    field = np.zeros((2, 20, 20, 3), np.float32)
    straight = warped_grid(field, (1, 1, 1), grid_mm=5.0, line_mm=0.5)
    assert np.array_equal(np.flatnonzero(straight[0, :, 1]), [0, 5, 10, 15])
    field[..., 1] = 1.0  # every point comes from 1 mm further along y
    moved = warped_grid(field, (1, 1, 1), grid_mm=5.0, line_mm=0.5)
    assert np.array_equal(np.flatnonzero(moved[0, :, 1]), [4, 9, 14, 19])


def test_bad_fields_and_inputs_say_what_is_wrong():
    with pytest.raises(XaimedError, match=r"\(z, y, x, 3\)"):
        jacobian_determinant(np.zeros((4, 4, 4)), SPACING)
    bad = np.zeros((4, 4, 4, 3))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        jacobian_determinant(bad, SPACING)
    with pytest.raises(XaimedError, match="interpolation"):
        resample(np.zeros((4, 4, 4)), (4, 4, 4), None, fixed_spacing=SPACING,
                 fixed_origin=(0, 0, 0), moving_spacing=SPACING, moving_origin=(0, 0, 0),
                 interpolation="cubic")


@pytest.mark.parametrize("slab_voxels", [1, 40, 10**9])
def test_jacobian_in_slabs_equals_the_whole_volume(monkeypatch, slab_voxels):
    """Slab by slab (one-slice halo) gives the whole-volume central differences exactly."""
    from napari_xaimed.registration import fields

    rng = np.random.default_rng(5)
    field = rng.normal(size=(9, 4, 5, 3)).astype(np.float32)
    spacing = (1.5, 0.7, 1.1)
    grad = [list(np.gradient(field[..., i].astype(np.float64), *spacing)) for i in range(3)]
    for i in range(3):
        grad[i][i] += 1.0
    expected = np.linalg.det(np.moveaxis(np.array(grad), (0, 1), (-2, -1)))
    monkeypatch.setattr(fields, "SLAB_VOXELS", slab_voxels)
    np.testing.assert_allclose(fields.jacobian_determinant(field, spacing), expected,
                               rtol=1e-5, atol=1e-5)
