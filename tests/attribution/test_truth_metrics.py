"""Explanation metrics against ground truth on hand-computed cases."""

import numpy as np
import pytest

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import (
    auroc,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_precision,
    truth_scores,
)

# 8 voxels; the mask holds the voxels valued 4 and 3, the maximum (5) lies outside it.
HEAT = np.array([[[4.0, 3, 2, 1], [0, -1, -2, 5]]])
MASK = np.array([[[1, 1, 0, 0], [0, 0, 0, 0]]], bool)


def test_hand_computed_case():
    assert relevance_mass_accuracy(HEAT, MASK) == pytest.approx(7 / 15)  # positives: 15
    assert relevance_rank_accuracy(HEAT, MASK) == pytest.approx(1 / 2)  # top 2: 5 and 4
    assert top_k_precision(HEAT, MASK, k=3) == pytest.approx(2 / 3)  # 5, 4, 3
    assert top_k_precision(HEAT, MASK, k=0.25) == pytest.approx(1 / 2)  # a quarter: 2 voxels
    assert auroc(HEAT, MASK) == pytest.approx(10 / 12)  # 4 and 3 beat all but the 5
    # the peak (0, 1, 3) is sqrt(1 + 4) = 2.236 voxels from the mask voxel (0, 0, 1)
    assert not pointing_game(HEAT, MASK)
    assert not pointing_game(HEAT, MASK, tolerance_mm=2.2)
    assert pointing_game(HEAT, MASK, tolerance_mm=2.25)
    # in mm: y 1 x 0.5 mm, x 2 x 2 mm -> sqrt(0.25 + 16) = 4.03 mm
    assert not pointing_game(HEAT, MASK, spacing=(1, 0.5, 2), tolerance_mm=4.0)
    assert pointing_game(HEAT, MASK, spacing=(1, 0.5, 2), tolerance_mm=4.1)


def test_perfect_map_scores_one_and_constant_map_scores_chance():
    rng = np.random.default_rng(0)
    mask = np.zeros((12, 14, 16), bool)
    mask[3:7, 4:9, 5:11] = True
    perfect = mask * rng.uniform(1, 2, mask.shape)
    scores = truth_scores(perfect, mask, k=int(mask.sum()))
    assert scores == {key: pytest.approx(1.0) for key in scores}
    chance = mask.mean()
    constant = np.ones(mask.shape)
    assert relevance_mass_accuracy(constant, mask) == pytest.approx(chance)
    assert relevance_rank_accuracy(constant, mask) == pytest.approx(chance)
    assert top_k_precision(constant, mask, k=50) == pytest.approx(chance)
    assert auroc(constant, mask) == pytest.approx(0.5)


def test_random_map_scores_about_chance():
    rng = np.random.default_rng(1)
    mask = np.zeros((40, 40, 40), bool)
    mask[10:20, 10:30, 5:25] = True
    noise = rng.normal(size=mask.shape)
    chance = mask.mean()
    assert relevance_rank_accuracy(noise, mask) == pytest.approx(chance, abs=0.01)
    assert relevance_mass_accuracy(noise, mask) == pytest.approx(chance, abs=0.01)
    assert auroc(noise, mask) == pytest.approx(0.5, abs=0.01)


def test_auroc_equals_pairwise_count_with_ties():
    rng = np.random.default_rng(2)
    heat = rng.integers(0, 4, (5, 6, 7)).astype(float)  # many ties
    mask = rng.random(heat.shape) < 0.3
    inside, outside = heat[mask], heat[~mask]
    diff = inside[:, None] - outside[None, :]
    expected = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert auroc(heat, mask) == pytest.approx(expected, rel=1e-12)


def test_ties_at_the_cut_share_out():
    heat = np.array([[[3.0, 1, 1, 1, 1]]])
    mask = np.array([[[0, 1, 0, 0, 0]]], bool)
    # top 2: the 3, then one of four tied 1s of which one is inside -> (0 + 1/4) / 2
    assert top_k_precision(heat, mask, k=2) == pytest.approx(0.125)


def test_no_positive_relevance_gives_nan_mass_accuracy():
    assert np.isnan(relevance_mass_accuracy(-np.ones((2, 2, 2)), np.ones((2, 2, 2), bool)))


@pytest.mark.parametrize("heat,mask,match", [
    (np.zeros((4, 4)), np.ones((4, 4), bool), "3D"),
    (np.zeros((2, 2, 2)), np.ones((2, 2, 3), bool), "differ in shape"),
    (np.full((2, 2, 2), np.nan), np.ones((2, 2, 2), bool), "NaN"),
    (np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool), "empty"),
])
def test_clear_errors(heat, mask, match):
    with pytest.raises(XaimedError, match=match):
        relevance_rank_accuracy(heat, mask)


def test_auroc_needs_an_outside_and_k_must_fit():
    with pytest.raises(XaimedError, match="whole volume"):
        auroc(np.zeros((2, 2, 2)), np.ones((2, 2, 2), bool))
    with pytest.raises(XaimedError, match="between 1 and"):
        top_k_precision(HEAT, MASK, k=9)
    with pytest.raises(XaimedError, match="fraction"):
        top_k_precision(HEAT, MASK, k=1.5)
