"""Relevance per predicted structure, against sums, means and shares worked out by hand."""

import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed.explanations.structures import (
    STRUCTURE_COLUMNS,
    relevance_by_structure,
    relevance_by_structure_region,
)


def _case():
    """Two 2x2x2 boxes: label 1 holds 2.0 everywhere, label 2 holds four 3.0 and four -1.0;
    one face neighbour of box 1 holds 1.0, one far voxel 5.0."""
    heat = np.zeros((10, 10, 10))
    pred = np.zeros((10, 10, 10), np.uint8)
    heat[1:3, 1:3, 1:3] = 2.0
    pred[1:3, 1:3, 1:3] = 1
    heat[6:8, 6:8, 6] = 3.0
    heat[6:8, 6:8, 7] = -1.0
    pred[6:8, 6:8, 6:8] = 2
    heat[0, 1, 1] = 1.0  # touches box 1 through a face: in its 1 mm shell
    heat[9, 0, 9] = 5.0  # far from both
    return heat, pred


def test_sums_means_shares_and_shell_by_hand():
    heat, pred = _case()
    table = relevance_by_structure(heat, pred, margin_mm=1.0)
    assert list(table.columns) == list(STRUCTURE_COLUMNS)
    assert list(table["label"]) == [1, 2]
    one, two = table.iloc[0], table.iloc[1]
    total_positive = 16 + 12 + 1 + 5  # 34
    assert one["voxels"] == 8 and one["volume_mm3"] == 8
    assert one["sum"] == pytest.approx(16) and one["mean"] == pytest.approx(2)
    assert one["positive_share"] == pytest.approx(16 / 34)
    # a 1 mm shell of a 2x2x2 box: the 6 face-adjacent 2x2 patches (diagonals are sqrt 2 mm)
    assert one["around_voxels"] == 24
    assert one["around_sum"] == pytest.approx(1.0)
    assert one["around_mean"] == pytest.approx(1 / 24)
    assert one["inside_around_ratio"] == pytest.approx(2 / (1 / 24))
    assert two["sum"] == pytest.approx(8) and two["mean"] == pytest.approx(1)
    assert two["positive_share"] == pytest.approx(12 / total_positive)
    assert two["around_voxels"] == 24 and two["around_sum"] == 0
    assert np.isnan(two["inside_around_ratio"])  # mean around 0: no ratio


def test_anisotropic_spacing_narrows_the_shell():
    heat, pred = _case()
    table = relevance_by_structure(heat, pred, spacing=(2.0, 1.0, 1.0), margin_mm=1.0)
    one = table.iloc[0]
    # the z neighbours are 2 mm away: only the 4 in-plane faces remain
    assert one["around_voxels"] == 16 and one["around_sum"] == 0
    assert one["volume_mm3"] == 16


def test_shell_leaves_other_structures_out_and_components_split():
    heat = np.zeros((6, 6, 12))
    pred = np.zeros((6, 6, 12), np.int32)
    pred[2:4, 2:4, 1:3] = 1
    pred[2:4, 2:4, 3:5] = 2  # touches label 1: never part of its shell
    heat[2:4, 2:4, 3:5] = 7.0
    pred[2:4, 2:4, 8:10] = 1  # a second, separate structure of label 1
    table = relevance_by_structure(heat, pred, margin_mm=1.0)
    assert list(zip(table["label"], table["structure"], strict=True)) == [(1, 1), (1, 2), (2, 1)]
    first = table.iloc[0]
    assert first["around_sum"] == 0 and first["around_voxels"] == 20  # 24 less the 4 of label 2


def test_regions_assign_and_aggregate():
    heat, pred = _case()
    atlas = np.zeros_like(pred)
    atlas[:5] = 3
    atlas[5:] = 4
    table = relevance_by_structure(heat, pred, margin_mm=1.0, regions=atlas,
                                   names={3: "upper", 4: "lower"})
    assert list(table["region"]) == [3, 4]
    assert list(table["region_name"]) == ["upper", "lower"]
    per_region = relevance_by_structure_region(heat, pred, atlas).set_index("label")
    # only predicted voxels count: region 3 holds box 1 (sum 16), region 4 box 2 (sum 8)
    assert per_region.loc[3, "sum"] == pytest.approx(16) and per_region.loc[3, "voxels"] == 8
    assert per_region.loc[4, "mean"] == pytest.approx(1)
    assert per_region.loc[3, "positive_share"] == pytest.approx(16 / 34)


def test_bad_inputs_are_refused():
    heat, pred = _case()
    with pytest.raises(XaimedError, match="empty"):
        relevance_by_structure(heat, np.zeros_like(pred))
    with pytest.raises(XaimedError, match="margin_mm"):
        relevance_by_structure(heat, pred, margin_mm=0)
    with pytest.raises(XaimedError, match="shape"):
        relevance_by_structure(heat, pred[:5])
    with pytest.raises(XaimedError, match="no predicted structure"):
        relevance_by_structure_region(heat, pred, np.where(pred > 0, 0, 1))
