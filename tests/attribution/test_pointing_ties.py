"""The pointing game with voxels tied for the maximum: the expectation over the tied voxels, as
the top-k precision shares its ties (issue 27, item 13), in memory and slab by slab."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from napari_xaimed.attribution import pointing_game, rank_methods, truth_scores
from napari_xaimed.explanations.ranking import _score
from napari_xaimed.explanations.truth_lazy import truth_scores_lazy


def cube_mask(shape=(4, 5, 6)):
    """A 2 x 2 x 2 mask at (1..2, 1..2, 1..2)."""
    mask = np.zeros(shape, bool)
    mask[1:3, 1:3, 1:3] = True
    return mask


def all_ones_but_one(shape=(4, 5, 6)):
    heat = np.ones(shape)
    heat[0, 0, 0] = 0.0  # 119 voxels tie for the maximum
    return heat


@pytest.mark.parametrize("spacing, tolerance, near", [
    ((1, 1, 1), 0.0, 8),  # the mask itself
    ((1, 1, 1), 1.0, 8 + 6 * 4),  # and the four voxels on each face
    ((1, 1, 1), 1.5, 8 + 6 * 4 + 12 * 2),  # and two beside each edge (sqrt 2 away)
    # the 4^3 cube around the mask: all but the zero voxel, a corner sqrt 3 away from it
    ((1, 1, 1), 1.8, 4 ** 3 - 1),
    ((2, 1, 1), 1.0, 8 + 4 * 4),  # planes 2 mm apart: only the in-plane faces
])
def test_an_all_ones_map_with_one_zero_scores_the_share_of_its_peaks_near_the_mask(
        spacing, tolerance, near):
    heat, mask = all_ones_but_one(), cube_mask()
    got = pointing_game(heat, mask, spacing=spacing, tolerance_mm=tolerance)
    assert got == pytest.approx(near / 119, rel=1e-15)
    lazy = truth_scores_lazy(da.from_array(heat, chunks=(1, 5, 6)), mask, spacing=spacing,
                             tolerance_mm=tolerance, slab=1)
    assert lazy["pointing_game"] == pytest.approx(near / 119, rel=1e-15)


def test_a_single_strict_maximum_scores_one_inside_and_zero_outside():
    rng = np.random.default_rng(0)
    mask = cube_mask((6, 7, 8))
    heat = rng.uniform(0, 1, mask.shape)
    heat[2, 2, 2] = 2.0
    assert pointing_game(heat, mask) == 1.0
    heat[2, 2, 2] = 0.5
    heat[5, 6, 7] = 2.0  # far from the mask
    assert pointing_game(heat, mask) == 0.0
    assert pointing_game(heat, mask, tolerance_mm=5.0) == 0.0  # |(3, 4, 5)| = 7.07 voxels
    assert pointing_game(heat, mask, tolerance_mm=7.1) == 1.0


def brute_force(heat, mask, spacing, tolerance):
    """Share of the voxels holding the maximum whose nearest mask voxel (all of them, by
    scipy's cdist in mm) lies within the tolerance."""
    peaks = np.argwhere(heat == heat.max()) * np.asarray(spacing, float)
    inside = np.argwhere(mask) * np.asarray(spacing, float)
    return float(np.mean(cdist(peaks, inside).min(axis=1) <= tolerance + 1e-9))


@pytest.mark.parametrize("seed", range(4))
def test_blocky_maps_in_memory_and_slab_by_slab_equal_a_brute_force_share(seed):
    """Occlusion-like maps: 3^3 blocks of one value each, a few blocks tied for the top, a
    random mask; every tolerance, spacing and slab size gives the brute-force share."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, (4, 5, 4)).astype(float)  # several blocks hold the top value
    heat = np.kron(blocks, np.ones((3, 3, 3)))[:11, :14, :12]
    mask = np.zeros(heat.shape, bool)
    for _ in range(3):
        corner = rng.integers(0, [9, 12, 10])
        mask[tuple(slice(c, c + int(rng.integers(1, 3))) for c in corner)] = True
    assert np.count_nonzero(heat == heat.max()) >= 27  # a whole block ties, at least
    shares = []
    for spacing in ((1.0, 1.0, 1.0), (2.5, 0.7, 0.7)):
        for tolerance in (0.0, 0.7, 1.4, 2.5, 4.0):
            want = brute_force(heat, mask, spacing, tolerance)
            shares.append(want)
            got = pointing_game(heat, mask, spacing=spacing, tolerance_mm=tolerance)
            assert got == pytest.approx(want, rel=1e-12), (spacing, tolerance)
            for slab in (1, 2, 5):
                lazy = truth_scores_lazy(da.from_array(heat, chunks=(slab, 14, 12)), mask,
                                         spacing=spacing, tolerance_mm=tolerance, slab=slab)
                assert lazy["pointing_game"] == pytest.approx(want, rel=1e-12), (
                    spacing, tolerance, slab)
    assert any(0 < share < 1 for share in shares)  # not only all-or-nothing cases


def test_a_blocky_map_no_longer_ties_a_sharp_one_in_the_ranking():
    """A sharp map with its peak in the mask against an all-ones map with one zero voxel: the
    pointing game used to give both a hit, so they tied for first."""
    mask = cube_mask()
    sharp = np.zeros(mask.shape)
    sharp[1, 1, 1] = 1.0
    settings = [{"metric": "pointing_game", "tolerance_mm": 0.0}]
    scores = [[_score(settings[0], sharp, mask, None),
               _score(settings[0], all_ones_but_one(), mask, None)]]
    assert scores == [[1.0, 8 / 119]]
    result = rank_methods(scores, ["sharp", "blocky"], settings)
    assert result.winners == [["sharp"]]
    assert truth_scores(all_ones_but_one(), mask)["pointing_game"] == 8 / 119


def test_a_constant_map_still_points_nowhere():
    mask = cube_mask()
    assert pointing_game(np.ones(mask.shape), mask, tolerance_mm=3.0) == 0.0
    assert truth_scores_lazy(da.ones(mask.shape, chunks=(1, 5, 6)), mask,
                             tolerance_mm=3.0)["pointing_game"] == 0.0
