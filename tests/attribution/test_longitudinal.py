"""Longitudinal explanations on the longitudinal sample, whose deformation and new lesion are
known: the carried heatmap, the change maps, the feature grid and the feature warp."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_xaimed import XaimedError
from napari_xaimed.attribution import explain_change
from napari_xaimed.longitudinal.explain import feature_grid, field_on_grid, warp_features
from napari_xaimed.registration import RegistrationResult
from napari_xaimed.samples import longitudinal_pair


@pytest.fixture(scope="module")
def pair():
    return longitudinal_pair(seed=0, new_lesion_radius_mm=6.0)


@pytest.fixture(scope="module")
def known(pair):
    """The explanation with the sample's own field (no registration)."""
    return explain_change(pair.moving, pair.fixed, "bundled", spacing=pair.spacing,
                          registration=pair.displacement, device="cpu")


def pull_back(moving, displacement, spacing):
    """Independent resampling: fixed voxel p takes the moving value at p + u(p) (mm)."""
    idx = np.indices(moving.shape, dtype=np.float64)
    coords = np.stack([(idx[a] * spacing[a] + displacement[..., a]) / spacing[a]
                       for a in range(3)])
    return ndi.map_coordinates(moving.astype(np.float64), coords, order=1, mode="constant",
                               cval=0.0)


def test_carried_prior_matches_independent_resampling(pair, known):
    reference = pull_back(known.prior, pair.displacement, pair.spacing)
    np.testing.assert_allclose(known.carried_prior, reference, rtol=1e-4,
                               atol=1e-6 * np.abs(reference).max())
    np.testing.assert_allclose(known.change, known.current - known.carried_prior, atol=1e-7)
    assert known.current.shape == known.change.shape == known.feature_change.shape \
        == pair.fixed.shape
    assert known.spacing == pair.spacing
    np.testing.assert_array_equal(known.displacement, pair.displacement)


def test_normalised_change_scales_each_map_by_its_own_peak(known):
    expected = (known.current / np.abs(known.current).max()
                - known.carried_prior / np.abs(known.prior).max())
    np.testing.assert_allclose(known.change_normalised, expected, atol=1e-6)


@pytest.mark.parametrize("registration", ["zeros", "identity"])
def test_identical_scans_and_zero_field_give_no_change(pair, registration):
    zero = np.zeros((*pair.fixed.shape, 3), np.float32)
    res = explain_change(pair.fixed, pair.fixed, "bundled", spacing=pair.spacing,
                         registration=zero if registration == "zeros" else "identity",
                         device="cpu")
    scale = np.abs(res.current).max()
    assert scale > 0
    np.testing.assert_allclose(res.carried_prior, res.prior, atol=1e-6 * scale)
    assert np.abs(res.change).max() <= 1e-5 * scale
    assert np.abs(res.change_normalised).max() <= 1e-5
    assert np.abs(res.feature_change).max() == 0.0
    assert np.abs(res.channel_change).max() == 0.0
    np.testing.assert_array_equal(res.feature_displacement, 0.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_change_is_highest_where_the_lesion_appeared(seed):
    pair = longitudinal_pair(seed=seed, new_lesion_radius_mm=6.0)
    res = explain_change(pair.moving, pair.fixed, "bundled", spacing=pair.spacing,
                         registration=pair.displacement, device="cpu")
    lesion, elsewhere = pair.new_lesion, pair.body & ~pair.new_lesion
    centre = np.argwhere(lesion).mean(axis=0) * np.asarray(pair.spacing)
    for name in ("change", "change_normalised", "feature_change"):
        change = getattr(res, name)
        assert change[lesion].mean() > 5 * abs(change[elsewhere].mean()), name
        peak = np.asarray(np.unravel_index(np.argmax(change), change.shape)) * pair.spacing
        # the peak lies at the new lesion, within its radius and one feature voxel (8 mm)
        assert np.linalg.norm(peak - centre) < 6.0 + 8.0, name
    # the model explains the same class in both scans
    assert res.target == int(np.argmax(res.scores["current"]))


def test_identity_carries_between_grids_in_world_coordinates(pair):
    # the prior on a coarser grid elsewhere in the world: no field, only the grids' geometry
    prior = pair.moving[::2, 1::2, ::2]
    p_spacing = tuple(2 * s for s in pair.spacing)
    p_origin = (0.0, pair.spacing[1], 0.0)
    res = explain_change(prior, pair.fixed, "bundled", spacing=pair.spacing,
                         prior_spacing=p_spacing, prior_origin=p_origin,
                         registration="identity", device="cpu")
    assert res.displacement is None and res.prior.shape == prior.shape
    idx = np.indices(pair.fixed.shape, dtype=np.float64)
    coords = np.stack([(idx[a] * pair.spacing[a] - p_origin[a]) / p_spacing[a]
                       for a in range(3)])
    reference = ndi.map_coordinates(res.prior.astype(np.float64), coords, order=1,
                                    mode="constant", cval=0.0)
    np.testing.assert_allclose(res.carried_prior, reference, rtol=1e-4,
                               atol=1e-6 * np.abs(reference).max())
    np.testing.assert_array_equal(res.feature_displacement, 0.0)


def test_a_segmentation_model_explains_its_channel_in_both_scans(pair):
    res = explain_change(pair.moving, pair.fixed, "bundled-segmenter", spacing=pair.spacing,
                         registration=pair.displacement, device="cpu")
    assert res.target == 1  # the lesion channel, summed where the model predicts it
    lesion, elsewhere = pair.new_lesion, pair.body & ~pair.new_lesion
    for change in (res.change, res.feature_change):
        assert change[lesion].mean() > 5 * abs(change[elsewhere].mean())


def test_feature_grid_matches_pooling_of_coordinates():
    shape, spacing, origin = (56, 64, 48), (1.5, 1.0, 0.8), (3.0, -2.0, 10.0)
    factor = (7, 8, 4)
    f_shape = tuple(n // f for n, f in zip(shape, factor, strict=True))
    f_spacing, f_origin = feature_grid(shape, f_shape, spacing, origin)
    for axis in range(3):
        # the world coordinate of every voxel, averaged over each feature voxel's block
        world = origin[axis] + np.indices(shape)[axis] * spacing[axis]
        pooled = torch.nn.functional.avg_pool3d(torch.from_numpy(world)[None, None],
                                                factor)[0, 0].numpy()
        centres = f_origin[axis] + np.indices(pooled.shape)[axis] * f_spacing[axis]
        np.testing.assert_allclose(pooled, centres, atol=1e-9)


def test_constant_field_on_the_feature_grid_keeps_its_mm_shift():
    shape, spacing = (28, 32, 30), (1.5, 1.0, 1.2)
    shift = np.array([2.5, -1.25, 0.75], np.float32)
    field = np.broadcast_to(shift, (*shape, 3)).copy()
    f_shape = (7, 8, 6)
    f_sp, f_or = feature_grid(shape, f_shape, spacing)
    on_grid = field_on_grid(field, spacing, (0.0, 0.0, 0.0), f_shape, f_sp, f_or)
    assert on_grid.shape == (*f_shape, 3)
    np.testing.assert_allclose(on_grid, np.broadcast_to(shift, on_grid.shape), atol=1e-6)


def test_linear_field_on_the_feature_grid_is_the_field_at_feature_centres():
    shape, spacing, origin = (24, 32, 28), (2.0, 1.0, 1.5), (1.0, 2.0, -3.0)
    a = np.array([[0.01, -0.02, 0.0], [0.03, 0.0, 0.01], [-0.01, 0.02, 0.02]])
    b = np.array([0.5, -1.0, 2.0])
    world = np.stack(np.meshgrid(*[o + np.arange(n) * s for n, s, o
                                   in zip(shape, spacing, origin, strict=True)], indexing="ij"), -1)
    field = (world @ a.T + b).astype(np.float64)
    f_shape = (6, 8, 7)
    f_sp, f_or = feature_grid(shape, f_shape, spacing, origin)
    centres = np.stack(np.meshgrid(*[o + np.arange(n) * s for n, s, o
                                     in zip(f_shape, f_sp, f_or, strict=True)], indexing="ij"), -1)
    on_grid = field_on_grid(field, spacing, origin, f_shape, f_sp, f_or)
    np.testing.assert_allclose(on_grid, centres @ a.T + b, atol=1e-5)


def test_feature_warp_with_zero_field_is_the_identity_and_shifts_by_whole_voxels():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 6, 7, 8)).astype(np.float32)
    sp, org = (10.5, 8.0, 8.0), (4.5, 3.5, 3.5)
    zero = np.zeros((6, 7, 8, 3), np.float32)
    same = warp_features(feats, zero, spacing=sp, origin=org, moving_spacing=sp,
                         moving_origin=org)
    np.testing.assert_array_equal(same, feats)
    # one feature voxel along x (8 mm): fixed voxel i takes the moving voxel i + 1
    shifted = zero.copy()
    shifted[..., 2] = 8.0
    moved = warp_features(feats, shifted, spacing=sp, origin=org, moving_spacing=sp,
                          moving_origin=org)
    np.testing.assert_allclose(moved[..., :-1], feats[..., 1:], atol=1e-6)
    np.testing.assert_allclose(moved[..., -1], feats[..., -1], atol=1e-6)  # edge value


def test_a_named_layer_and_another_method(pair, tiny):
    res = explain_change(pair.moving, pair.fixed, tiny, method="saliency", layer="conv2",
                         spacing=pair.spacing, registration=pair.displacement, device="cpu")
    assert res.layer == "conv2" and res.method == "saliency"
    assert res.channel_change.shape == res.channel_weights.shape == (6,)
    # TinyNet pools once: the feature grid is the image's, halved
    assert res.feature_spacing == pytest.approx(tuple(2 * s for s in pair.spacing))
    reference = pull_back(res.prior, pair.displacement, pair.spacing)
    np.testing.assert_allclose(res.carried_prior, reference, rtol=1e-4,
                               atol=1e-6 * np.abs(reference).max())


def test_feature_change_is_the_gradient_weighted_feature_difference(tiny, volume):
    # an independent Grad-CAM-style computation with plain torch hooks; zero field: no warp
    prior = np.flip(volume, axis=2).copy()
    res = explain_change(prior, volume, tiny, method="saliency", layer="relu2",
                         registration="identity", device="cpu")
    kept = {}
    handle = tiny.relu2.register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    x = torch.from_numpy(volume)[None, None].requires_grad_(True)
    score = tiny(x)[0, res.target]
    grads = torch.autograd.grad(score, kept.pop("a"), retain_graph=False)
    tiny(x)
    a_current = kept.pop("a")
    tiny(torch.from_numpy(prior)[None, None])
    a_prior = kept.pop("a")
    handle.remove()
    weights = grads[0].mean(dim=(2, 3, 4))[0]
    weighted = (weights[:, None, None, None] * (a_current - a_prior)[0]).sum(0)
    expected = torch.nn.functional.interpolate(weighted[None, None].detach(),
                                               size=volume.shape, mode="trilinear",
                                               align_corners=False)[0, 0].numpy()
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(res.feature_change, expected, atol=1e-5 * scale)
    np.testing.assert_allclose(res.channel_weights, weights.numpy(), rtol=1e-5, atol=1e-9)
    norms = torch.linalg.vector_norm((a_current - a_prior)[0].flatten(1), dim=1)
    np.testing.assert_allclose(res.channel_change, norms.detach().numpy(), rtol=1e-5)


def _result(fixed_shape, moving_shape, spacing=(1.0, 1.0, 1.0)):
    return RegistrationResult(
        warped=np.zeros(fixed_shape, np.float32),
        displacement=np.zeros((*fixed_shape, 3), np.float32),
        jacobian=np.ones(fixed_shape, np.float32), transform="SyN", fixed_spacing=spacing,
        fixed_origin=(0.0, 0.0, 0.0), moving_spacing=spacing, moving_origin=(0.0, 0.0, 0.0),
        moving_shape=tuple(moving_shape))


def test_bad_inputs_say_what_to_do(pair):
    prior, current = pair.moving[:32, :32, :32], pair.fixed[:32, :32, :32]
    before = (prior.copy(), current.copy())
    field = np.zeros((32, 32, 32, 3), np.float32)
    kwargs = {"model": "bundled", "device": "cpu"}
    with pytest.raises(XaimedError, match=r"current scan's grid.*Register"):
        explain_change(prior, current, registration=field[:30], **kwargs)
    with pytest.raises(XaimedError, match=r"\(z, y, x, 3\)"):
        explain_change(prior, current, registration=field[..., :2], **kwargs)
    nan_field = field.copy()
    nan_field[3, 4, 5, 1] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        explain_change(prior, current, registration=nan_field, **kwargs)
    with pytest.raises(XaimedError, match=r"3D.*z axis"):
        explain_change(prior[0], current, registration=field, **kwargs)
    bad = current.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(XaimedError, match="NaN.*nan_to_num"):
        explain_change(prior, bad, registration=field, **kwargs)
    with pytest.raises(XaimedError, match="moving image had shape"):
        explain_change(prior, current, registration=_result((32,) * 3, (30, 32, 32)),
                       **kwargs)
    with pytest.raises(XaimedError, match="fixed grid"):
        explain_change(prior, current, registration=_result((30, 32, 32), (32,) * 3),
                       **kwargs)
    with pytest.raises(XaimedError, match="differs from the registration"):
        explain_change(prior, current, registration=_result((32,) * 3, (32,) * 3),
                       spacing=(2.0, 1.0, 1.0), **kwargs)
    with pytest.raises(XaimedError, match="'identity'"):
        explain_change(prior, current, registration="rigid", **kwargs)
    with pytest.raises(XaimedError, match="unknown method"):
        explain_change(prior, current, registration=field, method="magic", **kwargs)
    np.testing.assert_array_equal(prior, before[0])
    np.testing.assert_array_equal(current, before[1])


def test_inputs_are_not_modified(pair, known):
    fresh = longitudinal_pair(seed=0, new_lesion_radius_mm=6.0)
    np.testing.assert_array_equal(pair.moving, fresh.moving)
    np.testing.assert_array_equal(pair.fixed, fresh.fixed)
    np.testing.assert_array_equal(pair.displacement, fresh.displacement)


def test_real_registration_path():
    small = longitudinal_pair(shape=(32, 36, 34), spacing=(1.5, 1.0, 0.9), seed=4, n_lesions=1,
                              new_lesion_radius_mm=5.0)
    res = explain_change(small.moving, small.fixed, "bundled", spacing=small.spacing,
                         transform="SyN", registration_params={"iterations": (20, 10, 0)},
                         device="cpu")
    reg = res.registration
    assert isinstance(reg, RegistrationResult)
    # the registration found the deformation: closer to the truth than no registration
    error = np.linalg.norm(res.displacement - small.displacement, axis=-1)[small.body].mean()
    none = np.linalg.norm(small.displacement, axis=-1)[small.body].mean()
    assert error < 0.6 * none
    lesion, elsewhere = small.new_lesion, small.body & ~small.new_lesion
    assert res.change[lesion].mean() > 5 * abs(res.change[elsewhere].mean())
    # the heatmap is carried with the registration's own transform
    np.testing.assert_allclose(res.carried_prior, reg.apply(res.prior), atol=1e-7)
    # and the same registration given back gives the same explanation
    again = explain_change(small.moving, small.fixed, "bundled", registration=reg,
                           device="cpu")
    np.testing.assert_allclose(again.change, res.change, atol=1e-7)
    np.testing.assert_allclose(again.feature_change, res.feature_change, atol=1e-7)
    assert again.params["registration"]["source"] == "given registration"
