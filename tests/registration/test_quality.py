"""Quality figures against numpy's own histogram and correlation."""

import numpy as np
import pytest

from napari_xaimed.registration.quality import (
    dice_per_label,
    mutual_information,
    ncc,
    target_registration_error,
)


def mi_by_histogram2d(a, b, bins=32):
    joint, _, _ = np.histogram2d(a.ravel(), b.ravel(), bins=bins)
    p = joint / joint.sum()
    px, py = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return np.sum(p[nz] * np.log(p[nz] / (px @ py)[nz]))


def test_mutual_information_equals_histogram2d_version():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 21, 22)).astype(np.float32)
    b = 0.7 * a + 0.3 * rng.normal(size=a.shape)
    assert mutual_information(a, b) == pytest.approx(mi_by_histogram2d(a, b), rel=1e-9)
    mask = a > 0
    assert mutual_information(a, b, mask) == pytest.approx(mi_by_histogram2d(a[mask], b[mask]))
    noise = rng.random(a.shape)
    assert mutual_information(a, a) > mutual_information(a, b) > mutual_information(a, noise)


def test_ncc_dice_and_tre_by_hand():
    rng = np.random.default_rng(1)
    a = rng.random((5, 6, 7))
    b = 2 * a + 1
    assert ncc(a, b) == pytest.approx(1.0)
    assert ncc(a, -b) == pytest.approx(-1.0)
    assert np.isnan(ncc(a, np.ones_like(a)))
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 1
    ref[2:] = 2
    other = np.zeros_like(ref)
    other[:3] = 1  # label 1: 32 vs 48 voxels, 32 shared -> Dice 0.8; label 2 has 0 of 32
    assert dice_per_label(ref, other) == {1: pytest.approx(0.8), 2: 0.0}
    tre = target_registration_error([[0, 0, 0], [1, 1, 1]], [[0, 0, 3], [1, 1, 1]],
                                    np.array([[0, 0, 3.0], [0, 0, 0]]))
    assert tre == {"tre_mean_mm": 0.0, "tre_max_mm": 0.0}
