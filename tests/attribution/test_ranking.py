"""Ranking methods across evaluation settings, on a hand-made score table and a real run."""

import numpy as np
import pytest

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import compare_methods, rank_methods

SETTINGS = [{"metric": "deletion", "baseline": "blur"}, {"metric": "insertion"},
            {"metric": "auroc"}]
SCORES = [[0.2, 0.1, 0.3],  # deletion: lower is better -> B, A, C
          [0.5, 0.7, 0.7],  # insertion: B and C tie for first
          [0.9, 0.6, np.nan]]  # auroc: A; C could not be scored -> last


def test_hand_made_table():
    result = rank_methods(SCORES, ["A", "B", "C"], SETTINGS)
    np.testing.assert_allclose(result.ranks, [[2, 1, 3], [3, 1.5, 1.5], [1, 2, 3]])
    np.testing.assert_allclose(result.mean_rank, [2.0, 1.5, 2.5])
    assert result.rank_std[0] == pytest.approx(np.sqrt(2 / 3))
    assert result.winners == [["B"], ["B", "C"], ["A"]]
    assert result.winner_changes == pytest.approx(1 / 3)  # B wins most; A takes one setting
    assert result.overall == ["B", "A", "C"]
    table = result.to_dataframe()
    assert list(table["method"]) == ["B", "A", "C"]
    assert list(table["settings_won"]) == [2, 1, 1]
    assert list(result.settings_dataframe()["winner"]) == ["B", "B / C", "A"]


def test_one_winner_everywhere_means_no_changes():
    result = rank_methods([[1, 0], [0.9, 0.1]], ["good", "bad"],
                          [{"metric": "auroc"}, {"metric": "pointing_game"}])
    assert result.winner_changes == 0.0 and result.overall == ["good", "bad"]


def test_table_errors():
    with pytest.raises(XaimedError, match="must be"):
        rank_methods([[1, 2]], ["A", "B", "C"], [{"metric": "auroc"}])
    with pytest.raises(XaimedError, match="no known direction"):
        rank_methods([[1, 2]], ["A", "B"], [{"metric": "beauty"}])


def test_compare_methods_on_the_bundled_model():
    from napari_xaimed.samples import lesion_volume

    sample = lesion_volume(seed=5, n_lesions=2)
    settings = [{"metric": "deletion", "baseline": "blur", "steps": 5},
                {"metric": "relevance_rank_accuracy"},
                {"metric": "pointing_game", "tolerance_mm": 3.0}]
    result = compare_methods("bundled", sample.image, ["saliency", "gradcam"],
                             mask=sample.mask, settings=settings, spacing=sample.spacing,
                             target=1)
    assert result.scores.shape == (3, 2) and not np.isnan(result.scores).any()
    assert set(result.maps) == {"saliency", "gradcam"}
    assert result.maps["gradcam"].shape == sample.image.shape
    # each setting's score is the metric of that method's map
    from napari_xaimed.attribution import relevance_rank_accuracy
    assert result.scores[1, 0] == pytest.approx(
        relevance_rank_accuracy(result.maps["saliency"], sample.mask))
