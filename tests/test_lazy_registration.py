"""Registration of larger-than-memory volumes: downsampled copies, full-resolution warp."""

import dask.array as da
import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed.io.lazy import read_zarr, write_zarr
from napari_xaimed.registration import RegistrationResult
from napari_xaimed.registration.fields import jacobian_determinant
from napari_xaimed.registration.lazy import (
    _CoarseField,
    downsample,
    register_lazy,
    shrink_factors,
    warp_lazy,
)
from napari_xaimed.registration.quality import ncc
from napari_xaimed.samples import longitudinal_pair


def world(shape, spacing, origin):
    axes = [o + np.arange(n) * s for n, s, o in zip(shape, spacing, origin, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


@pytest.mark.parametrize("shape,factors", [((12, 16, 20), (2, 2, 2)),
                                           ((13, 17, 22), (3, 2, 4))])
def test_downsampling_keeps_world_coordinates(shape, factors):
    """Block means of a linear ramp equal the ramp at the coarse voxel's world centre (also
    with a remainder that is cropped), and a bright block lands on its world centre."""
    spacing, origin = (1.5, 0.8, 0.6), (-3.0, 10.0, 2.5)
    points = world(shape, spacing, origin)
    ramp = (points @ np.array([0.3, -0.2, 0.7])).astype(np.float32)
    small = downsample(da.from_array(ramp, chunks=(5, -1, -1)), factors, spacing=spacing,
                       origin=origin, slab_bytes=4000)
    assert small.data.shape == tuple(n // f for n, f in zip(shape, factors, strict=True))
    np.testing.assert_allclose(small.spacing, np.multiply(factors, spacing))
    centres = world(small.data.shape, small.spacing, small.origin)
    np.testing.assert_allclose(small.data, centres @ np.array([0.3, -0.2, 0.7]), atol=1e-4)

    bright = np.zeros(shape, np.float32)
    k = np.array([2, 1, 3])
    bright[tuple(slice(int(i * f), int((i + 1) * f)) for i, f in zip(k, factors,
                                                                       strict=True))] = 1.0
    point = points[bright > 0].mean(axis=0)  # the bright point's world centre, full grid
    small = downsample(bright, factors, spacing=spacing, origin=origin)
    (hit,) = np.argwhere(small.data == small.data.max())
    np.testing.assert_allclose(np.asarray(small.origin) + hit * np.asarray(small.spacing), point)


def test_shrink_factors_bound_the_voxels_and_keep_voxels_near_isotropic():
    factors = shrink_factors((300, 512, 512), (1.0, 0.5, 0.5), 2**21)
    coarse = [n // f for n, f in zip((300, 512, 512), factors, strict=True)]
    assert np.prod(coarse) <= 2**21
    coarse_mm = np.multiply(factors, (1.0, 0.5, 0.5))
    assert factors[1] == factors[2] and coarse_mm.max() <= 1.5 * coarse_mm.min()
    assert shrink_factors((8, 8, 8), (1, 1, 1), 512) == (1, 1, 1)


def _result_on(shape, spacing, origin, moving_shape, moving_spacing, moving_origin, seed=0):
    """A RegistrationResult with a known smooth field (no ANTs), on one grid."""
    rng = np.random.default_rng(seed)
    pts = world(shape, spacing, origin)
    disp = np.stack([1.3 * np.sin(pts[..., 1] / 7.0 + a) + rng.uniform(-0.5, 0.5)
                     for a in range(3)], axis=-1).astype(np.float32)
    return RegistrationResult(
        warped=np.zeros(shape, np.float32), displacement=disp,
        jacobian=jacobian_determinant(disp, spacing), transform="SyN", fixed_spacing=spacing,
        fixed_origin=origin, moving_spacing=moving_spacing, moving_origin=moving_origin,
        moving_shape=moving_shape)


def test_warp_lazy_on_the_coarse_grid_equals_apply(tmp_path):
    """Factor 1 (full grid = coarse grid): warp_lazy on a Zarr, slab by slab, equals
    RegistrationResult.apply, for an image (linear) and labels (nearest and label vote)."""
    f_shape, f_sp, f_or = (14, 18, 16), (1.5, 1.0, 1.2), (0.0, -2.0, 1.0)
    m_shape, m_sp, m_or = (16, 20, 15), (1.4, 0.9, 1.3), (1.0, -1.0, 0.0)
    result = _result_on(f_shape, f_sp, f_or, m_shape, m_sp, m_or)
    rng = np.random.default_rng(1)
    image = rng.normal(size=m_shape).astype(np.float32)
    labels = (rng.integers(0, 4, size=(4, 5, 4)).repeat(4, 0).repeat(4, 1).repeat(4, 2)
              [:16, :20, :15]).astype(np.uint8)
    geometry = {"coarse_spacing": f_sp, "coarse_origin": f_or, "fixed_shape": f_shape,
                "fixed_spacing": f_sp, "fixed_origin": f_or, "moving_spacing": m_sp,
                "moving_origin": m_or, "slab": 3}
    for name, volume, interpolation in (("image", image, "linear"),
                                        ("labels", labels, "nearest"),
                                        ("vote", labels, "label")):
        source = read_zarr(write_zarr(tmp_path / f"{name}.zarr", volume, m_sp, m_or,
                                      chunks=(4, 8, 8))).data
        warped = warp_lazy(source, result.displacement, tmp_path / f"{name}-out.zarr",
                           interpolation=interpolation, **geometry)
        assert isinstance(warped, da.Array) and warped.shape == f_shape
        expected = result.apply(volume, interpolation)
        assert warped.dtype == expected.dtype
        np.testing.assert_allclose(warped.compute(), expected, rtol=1e-5, atol=1e-6)
        back = read_zarr(tmp_path / f"{name}-out.zarr")  # the store keeps the fixed grid
        np.testing.assert_allclose(back.spacing, f_sp)


def test_the_coarse_field_is_sampled_at_full_resolution_world_points():
    """Trilinear sampling of the coarse field at full-grid voxels: a field linear in world
    coordinates comes back exactly inside the coarse grid."""
    c_sp, c_or = (3.0, 2.0, 2.0), (0.75, 0.5, 0.5)
    pts = world((6, 8, 8), c_sp, c_or)
    disp = (pts @ np.array([[0.1, 0.0, 0.2], [0.0, -0.1, 0.0], [0.05, 0.0, 0.1]]))
    coarse = _CoarseField(disp.astype(np.float32), c_sp, c_or)
    f_sp, f_or = (1.5, 1.0, 1.0), (0.0, 0.0, 0.0)
    got = coarse.on_slab(slice(2, 6), (12, 16, 16), f_sp, f_or)
    full = world((12, 16, 16), f_sp, f_or)[2:6]
    inside = np.all((full >= np.asarray(c_or)) & (full <= pts[-1, -1, -1]), axis=-1)
    expected = full @ np.array([[0.1, 0.0, 0.2], [0.0, -0.1, 0.0], [0.05, 0.0, 0.1]])
    np.testing.assert_allclose(got[inside], expected[inside], atol=1e-5)


@pytest.fixture(scope="module")
def deformed_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    sample = longitudinal_pair((48, 64, 64), spacing=(1.5, 1.0, 1.0), max_displacement_mm=3.0,
                               seed=3)
    fixed = write_zarr(folder / "fixed.zarr", sample.fixed, sample.spacing, chunks=(8, 64, 64))
    moving = write_zarr(folder / "moving.zarr", sample.moving, sample.spacing,
                        chunks=(8, 64, 64))
    lazy = register_lazy(str(fixed), str(moving), transform="SyN", shrink=2, seed=0,
                         out=folder / "warped.zarr", slab=8,
                         fixed_labels=da.from_array(sample.fixed_labels, chunks=(8, -1, -1)),
                         moving_labels=sample.moving_labels)
    return sample, lazy


def test_factor_two_recovers_a_known_deformation(deformed_pair):
    sample, lazy = deformed_pair
    assert lazy.fixed_factors == lazy.moving_factors == (2, 2, 2)
    assert lazy.coarse.displacement.shape == (24, 32, 32, 3)
    np.testing.assert_allclose(lazy.coarse_spacing, (3.0, 2.0, 2.0))
    np.testing.assert_allclose(lazy.coarse_origin, (0.75, 0.5, 0.5))
    field = _CoarseField(lazy.coarse.displacement, lazy.coarse_spacing, lazy.coarse_origin)
    recovered = field.on_slab(slice(0, 48), (48, 64, 64), sample.spacing, (0.0, 0.0, 0.0))
    error = np.linalg.norm(recovered - sample.displacement, axis=-1)[sample.body]
    before = np.linalg.norm(sample.displacement, axis=-1)[sample.body]
    print(f"displacement error in the body: mean {error.mean():.2f} mm, median "
          f"{np.median(error):.2f} mm (unregistered {before.mean():.2f} mm)")
    assert error.mean() < 0.5 * before.mean() and error.mean() < 1.5
    warped = lazy.warped.compute()
    assert warped.shape == sample.fixed.shape and lazy.path.exists()
    after, unregistered = ncc(sample.fixed, warped), ncc(sample.fixed, sample.moving)
    print(f"NCC full resolution: {unregistered:.3f} before, {after:.3f} after")
    assert after > unregistered + 0.05
    dice = lazy.coarse.metrics["dice_after"]  # labels downsampled by block mode
    assert set(dice) == {1, 2, 3} and min(dice.values()) > 0.8
    assert lazy.to_dict()["warped_store"] == str(lazy.path)


def test_label_maps_are_downsampled_by_block_mode():
    labels = np.zeros((4, 4, 6), np.uint8)
    labels[:2, :2, :2] = 3
    labels[0, 0, 0] = 1  # a minority in its block
    labels[2:, 2:, 4:] = 2
    small = downsample(labels, 2, spacing=(1, 1, 1), reduce="mode")
    assert small.data.dtype == np.uint8 and small.data.shape == (2, 2, 3)
    assert small.data[0, 0, 0] == 3 and small.data[1, 1, 2] == 2 and small.data.sum() == 5
    mask = downsample(labels == 1, 2, spacing=(1, 1, 1), reduce="max")
    assert mask.data[0, 0, 0] and mask.data.sum() == 1  # a mask keeps a small region


def test_errors_name_the_problem(tmp_path):
    image = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    sp = (1.0, 1.0, 1.0)
    with pytest.raises(XaimedError, match="3D"):
        register_lazy(image[0], image, fixed_spacing=sp, moving_spacing=sp)
    with pytest.raises(XaimedError, match="3D"):
        register_lazy(image[None], image, fixed_spacing=sp, moving_spacing=sp)
    with pytest.raises(XaimedError, match="spacing"):
        register_lazy(image, image, fixed_spacing=(1.0, 1.0), moving_spacing=sp)
    with pytest.raises(XaimedError, match="max_voxels"):
        register_lazy(image, image, fixed_spacing=sp, moving_spacing=sp, max_voxels=10)
    with pytest.raises(XaimedError, match="raise max_voxels"):
        register_lazy(image[:, :, :5], image, fixed_spacing=sp, moving_spacing=sp,
                      max_voxels=70)  # 4 x 4 x 5 voxels at least: 80
    with pytest.raises(XaimedError, match="shrink"):
        register_lazy(image, image, fixed_spacing=sp, moving_spacing=sp, shrink=4)
    (tmp_path / "taken.zarr").mkdir()
    with pytest.raises(XaimedError, match="already exists"):
        register_lazy(image, image, fixed_spacing=sp, moving_spacing=sp,
                      out=tmp_path / "taken.zarr")
    import zarr

    zarr.save_array(str(tmp_path / "bare.zarr"), image)  # no spacing anywhere
    with pytest.raises(XaimedError, match="does not say its voxel spacing"):
        register_lazy(str(tmp_path / "bare.zarr"), image, moving_spacing=sp)
    with pytest.raises(XaimedError, match="give its spacing"):
        register_lazy(da.from_array(image), image, moving_spacing=sp)


def test_a_world_point_maps_to_the_same_place_through_a_coarse_field(tmp_path):
    """A coarse field (grid from downsample, with a cropped remainder) that is a constant shift
    u: the full-resolution warp of a linear ramp on another grid is the ramp at p + u, at every
    fixed voxel whose p + u lies inside the moving volume (the cropped planes included)."""
    f_shape, f_sp, f_or = (13, 17, 22), (1.5, 0.8, 0.6), (-3.0, 10.0, 2.5)
    m_shape, m_sp, m_or = (12, 15, 16), (1.8, 1.0, 0.9), (-2.0, 9.0, 3.0)
    gradient = np.array([0.3, -0.2, 0.7])
    ramp = (world(m_shape, m_sp, m_or) @ gradient).astype(np.float32)
    coarse = downsample(np.zeros(f_shape, np.float32), (3, 2, 4), spacing=f_sp, origin=f_or)
    shift = np.array([0.7, -0.4, 1.1])
    field_mm = np.broadcast_to(shift, (*coarse.data.shape, 3)).astype(np.float32)
    warped = warp_lazy(da.from_array(ramp, chunks=(5, -1, -1)), field_mm, tmp_path / "w.zarr",
                       coarse_spacing=coarse.spacing, coarse_origin=coarse.origin,
                       fixed_shape=f_shape, fixed_spacing=f_sp, fixed_origin=f_or,
                       moving_spacing=m_sp, moving_origin=m_or, slab=4).compute()
    target = world(f_shape, f_sp, f_or) + shift
    lo, hi = np.asarray(m_or), np.asarray(m_or) + (np.asarray(m_shape) - 1) * np.asarray(m_sp)
    inside = np.all((target >= lo) & (target <= hi), axis=-1)
    assert inside.sum() > 1000 and inside[-1].any()  # the cropped last planes are covered
    np.testing.assert_allclose(warped[inside], target[inside] @ gradient, atol=1e-4)
    assert np.all(warped[~inside] == 0)
