"""Distance metrics against a brute-force computation over all surface voxel pairs."""

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from napari_xaimed.evaluation import evaluate
from napari_xaimed.evaluation.distances import cldice, distance_metrics, surface


def ellipsoid(shape, center, radii):
    grid = np.indices(shape, dtype=float)
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii, strict=True))
    return d <= 1.0


def brute_force(ref, pred, spacing, tolerance):
    a = np.argwhere(surface(ref)) * spacing
    b = np.argwhere(surface(pred)) * spacing
    d = cdist(a, b)
    ref_to_pred, pred_to_ref = d.min(axis=1), d.min(axis=0)
    pooled = np.concatenate([ref_to_pred, pred_to_ref])
    return {
        "hd": max(ref_to_pred.max(), pred_to_ref.max()),
        "hd95": np.percentile(pooled, 95),
        "hd95_directed": max(np.percentile(ref_to_pred, 95), np.percentile(pred_to_ref, 95)),
        "assd": (ref_to_pred.mean() + pred_to_ref.mean()) / 2,
        "nsd": np.mean(pooled <= tolerance),
    }


def test_surface_is_mask_minus_its_6_erosion_even_at_the_volume_border():
    rng = np.random.default_rng(3)
    mask = ndi.binary_opening(rng.random((14, 15, 16)) < 0.6)
    mask[0, :, :] = True  # touches the border: those voxels are surface
    expected = mask & ~ndi.binary_erosion(mask, structure=ndi.generate_binary_structure(3, 1))
    np.testing.assert_array_equal(surface(mask), expected)
    assert surface(mask)[0].all()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.7)])
def test_distances_equal_brute_force(spacing):
    shape = (20, 24, 26)
    ref = ellipsoid(shape, (9, 11, 12), (5, 7, 6))
    pred = ellipsoid(shape, (10, 12, 12), (6, 6, 7))
    ours = distance_metrics(ref, pred, spacing, nsd_tolerance_mm=1.5)
    expected = brute_force(ref, pred, np.asarray(spacing), 1.5)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-9), key


def test_crop_does_not_change_distances():
    shape = (30, 30, 30)
    ref = ellipsoid(shape, (12, 14, 15), (4, 5, 6))
    pred = ellipsoid(shape, (13, 14, 16), (4, 6, 5))
    c = evaluate(ref.astype(np.uint8), pred.astype(np.uint8), spacing=(1.5, 1.0, 1.0))["all"]
    (row,) = c.rows
    full = distance_metrics(ref, pred, (1.5, 1.0, 1.0), 1.0)
    for key in ("hd", "hd95", "assd", "nsd"):
        assert getattr(row, key) == pytest.approx(full[key])


def test_cldice_of_tubes():
    shape = (9, 9, 40)
    tube = np.zeros(shape, bool)
    tube[3:6, 3:6, 2:38] = True
    assert cldice(tube, tube) == pytest.approx(1.0)
    broken = tube.copy()
    broken[:, :, 18:22] = False  # a gap in the prediction
    value = cldice(tube, broken)
    assert 0.8 < value < 1.0
    half = tube.copy()
    half[:, :, 20:] = False  # only half of the centreline found
    assert cldice(tube, half) < value


@pytest.mark.parametrize("seed", range(6))
def test_grouped_percentile_equals_each_groups_percentile(seed):
    """Few distinct values (lattice lengths, many ties) or many; empty groups give NaN."""
    from napari_xaimed.evaluation.distances import _grouped_percentile

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 40)), int(rng.integers(0, 800))
    lengths = np.sqrt(rng.integers(0, 30, 12)) * 0.7
    values = lengths[rng.integers(0, 12, m)] if seed % 2 else rng.random(m) * 9
    groups = rng.integers(0, n, m)
    for q in (0, 5, 50, 95, 100):
        want = [np.percentile(values[groups == g], q) if np.any(groups == g) else np.nan
                for g in range(n)]
        np.testing.assert_allclose(_grouped_percentile(values, groups, n, q), want,
                                   rtol=0, atol=1e-12)
