"""The helpers that replaced repeated copies, each against a hand-computed case or a peer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import dice as scipy_dice_dissimilarity

from napari_xaimed._errors import XaimedError
from napari_xaimed.evaluation.overlap import mask_dice


def test_mask_dice_hand_computed_and_scipy():
    a = np.zeros((2, 3, 4), np.uint8)
    b = np.zeros((2, 3, 4), np.int16)
    a[0, 0, :4] = 1  # 4 voxels
    b[0, 0, 1:4] = 7  # 3 of them, plus 3 more: 6 voxels
    b[1, 2, :3] = 2
    assert mask_dice(a, b) == pytest.approx(2 * 3 / (4 + 6))
    assert mask_dice(a, b) == pytest.approx(1 - scipy_dice_dissimilarity(a.ravel() > 0,
                                                                         b.ravel() > 0))
    assert mask_dice(a, a) == 1.0
    assert mask_dice(a, 1 - a) == 0.0


def test_mask_dice_empty_and_shape():
    assert mask_dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    with pytest.raises(XaimedError, match="differ in shape"):
        mask_dice(np.zeros((3, 3)), np.zeros((3, 4)))
