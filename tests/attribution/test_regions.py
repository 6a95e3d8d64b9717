"""Relevance by region and agreement with a reference map, against hand-computed values and
scipy / scikit-learn."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.explanations.regions import (
    REGION_COLUMNS,
    reference_agreement,
    relevance_by_region,
)


def _atlas():
    """A 4x4x4 grid: region 7 the first two slices, region 300 the third, background the last."""
    labels = np.zeros((4, 4, 4), np.uint16)
    labels[:2] = 7
    labels[2] = 300
    heat = np.zeros((4, 4, 4), np.float32)
    heat[0] = 1.0    # region 7: 16 voxels at 1, 16 at -0.5
    heat[1] = -0.5
    heat[2] = 3.0    # region 300: 16 voxels at 3
    heat[3] = 0.25   # background: positive relevance outside every region
    return heat, labels


def test_region_table_matches_hand_computed_values():
    heat, labels = _atlas()
    table = relevance_by_region(heat, labels, names={300: "hippocampus"},
                                spacing=(2.0, 1.0, 0.5))
    assert tuple(table.columns) == REGION_COLUMNS
    by = table.set_index("label")
    total_positive = 16 * 1.0 + 16 * 3.0 + 16 * 0.25
    assert by.loc[7, "voxels"] == 32 and by.loc[300, "voxels"] == 16
    assert by.loc[7, "volume_mm3"] == pytest.approx(32 * 1.0)
    assert by.loc[7, "sum"] == pytest.approx(16 - 8)
    assert by.loc[7, "mean"] == pytest.approx(0.25)
    assert by.loc[300, "sum"] == pytest.approx(48)
    assert by.loc[7, "positive_share"] == pytest.approx(16 / total_positive)
    assert by.loc[300, "positive_share"] == pytest.approx(48 / total_positive)
    assert by.loc[300, "enrichment"] == pytest.approx((48 / total_positive) / (16 / 64))
    assert by.loc[300, "name"] == "hippocampus" and by.loc[7, "name"] == "7"
    assert list(table["label"]) == [300, 7] and list(table["rank"]) == [1, 2]


def test_a_map_without_information_has_enrichment_one_everywhere():
    _, labels = _atlas()
    table = relevance_by_region(np.ones(labels.shape), labels)
    np.testing.assert_allclose(table["enrichment"], 1.0)
    assert list(table["rank"]) == [1, 2]  # by sum: the larger region


def test_agreement_against_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10, 12, 14))
    heat = reference + rng.normal(scale=1.0, size=reference.shape)
    mask = np.zeros(reference.shape, bool)
    mask[1:9, 2:11, 3:13] = True
    regions = (np.arange(reference.size).reshape(reference.shape) % 6 + 1).astype(np.int32)
    got = reference_agreement(heat, reference, mask=mask, regions=regions,
                              top_percent=(10, 25))
    h, r = heat[mask], reference[mask]
    assert got.voxels == mask.sum()
    assert got.pearson == pytest.approx(pearsonr(h, r)[0])
    assert got.spearman == pytest.approx(spearmanr(h, r)[0])
    for k in (10, 25):
        top = r >= np.percentile(r, 100 - k)
        assert got.auroc[k] == pytest.approx(roc_auc_score(top, h))
    means_h = [h[regions[mask] == i].mean() for i in range(1, 7)]
    means_r = [r[regions[mask] == i].mean() for i in range(1, 7)]
    assert got.region_pearson == pytest.approx(pearsonr(means_h, means_r)[0])
    assert got.to_dict()["auroc_top10%"] == got.auroc[10]


def test_bad_regions_and_references_say_what_to_fix():
    heat, labels = _atlas()
    with pytest.raises(XaimedError, match="differ in shape"):
        relevance_by_region(heat, labels[:3])
    with pytest.raises(XaimedError, match="empty"):
        relevance_by_region(heat, np.zeros_like(labels))
    with pytest.raises(XaimedError, match="whole numbers"):
        relevance_by_region(heat, labels + 0.5)
    with pytest.raises(XaimedError, match="NaN"):
        relevance_by_region(np.full(heat.shape, np.nan), labels)
    with pytest.raises(XaimedError, match="3D"):
        relevance_by_region(heat[0], labels[0])
    with pytest.raises(XaimedError, match="constant"):
        reference_agreement(heat, np.ones(heat.shape))
    with pytest.raises(XaimedError, match="top_percent"):
        reference_agreement(heat, heat + 1, top_percent=(0,))
