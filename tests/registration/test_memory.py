"""The figures and derived layers of a registration work in z-slabs: the same values as one
whole-volume pass, without whole-volume float64 temporaries (a CT volume is 512 x 512 x 300)."""

import tracemalloc

import numpy as np
import pytest

from napari_xaimed.registration import fields, quality


def _pair(shape=(12, 9, 10), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    b = (0.7 * a + 0.3 * rng.normal(size=shape)).astype(np.float32)
    return a, b


def _whole_ncc(a, b):
    x = a.astype(np.float64).ravel()
    y = b.astype(np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    return np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y))


@pytest.mark.parametrize("chunk", [1, 95, 10**9])
def test_ncc_and_mutual_information_in_slabs_equal_one_pass(monkeypatch, chunk):
    a, b = _pair()
    mask = a > 0.2
    whole_mi = quality.mutual_information(a, b)  # default chunk: one slab at this size
    whole_mi_masked = quality.mutual_information(a, b, mask)
    monkeypatch.setattr(quality, "CHUNK_VOXELS", chunk)
    assert quality.ncc(a, b) == pytest.approx(_whole_ncc(a, b), rel=1e-12)
    assert quality.ncc(a, b, mask) == pytest.approx(_whole_ncc(a[mask], b[mask]), rel=1e-12)
    # the same bins, the same integer counts: exactly equal
    assert quality.mutual_information(a, b) == whole_mi
    assert quality.mutual_information(a, b, mask) == whole_mi_masked
    assert np.isnan(quality.ncc(a, b, np.zeros(a.shape, bool)))
    assert np.isnan(quality.mutual_information(a, b, np.zeros(a.shape, bool)))


@pytest.mark.parametrize("chunk", [1, 95, 10**9])
def test_jacobian_summary_and_grid_in_slabs_equal_one_pass(monkeypatch, chunk):
    rng = np.random.default_rng(3)
    jac = rng.normal(1.0, 0.4, size=(12, 9, 10)).astype(np.float32)
    mask = jac > 0.9
    field = rng.normal(scale=3.0, size=(12, 9, 10, 3)).astype(np.float32)
    grid = fields.warped_grid(field, (1.2, 0.7, 0.9), (1, 2, 3), grid_mm=2.0,
                              axes=(0, 1, 2))
    monkeypatch.setattr(fields, "_CHUNK_VOXELS", chunk)
    for m in (None, mask):
        values = (jac if m is None else jac[m]).astype(np.float64)
        got = fields.jacobian_summary(jac, m)
        assert got["jacobian_min"] == values.min() and got["jacobian_max"] == values.max()
        assert got["jacobian_mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert got["jacobian_std"] == pytest.approx(values.std(), rel=1e-12)
        assert got["folded_voxels"] == np.count_nonzero(values <= 0)
    assert fields.jacobian_summary(np.ones((4, 4, 4), np.float32) * 0.9995)["jacobian_std"] == 0
    assert np.array_equal(fields.warped_grid(field, (1.2, 0.7, 0.9), (1, 2, 3), grid_mm=2.0,
                                             axes=(0, 1, 2)), grid)
    bad = field.copy()
    bad[-1, 0, 0, 2] = np.inf  # in the last slab
    with pytest.raises(fields.XaimedError, match="NaN or infinite"):
        fields.check_field(bad)


def test_figures_and_jacobian_hold_no_whole_volume_temporary(monkeypatch):
    """Peak traced memory of the quality figures and the Jacobian, beyond their inputs and
    outputs, stays well under one float32 copy of the volume (it was 6 float32 copies for
    NCC and 7 for mutual information, 0.75 for checking the field)."""
    shape = (96, 128, 128)  # slabs of 2 slices, as 512 x 512 slices go by 3-4 at full size
    for module, name in ((quality, "CHUNK_VOXELS"), (fields, "_CHUNK_VOXELS"),
                         (fields, "SLAB_VOXELS")):
        monkeypatch.setattr(module, name, 2 * 128 * 128)
    a, b = _pair(shape)
    field = np.random.default_rng(1).normal(scale=0.5, size=(*shape, 3)).astype(np.float32)
    volume = a.nbytes
    tracemalloc.start()
    try:
        for figure in (lambda: quality.ncc(a, b), lambda: quality.mutual_information(a, b),
                       lambda: quality.ncc(a, b, a > 0),
                       lambda: fields.jacobian_summary(a), lambda: fields.check_field(field)):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            figure()
            assert tracemalloc.get_traced_memory()[1] - start < 0.75 * volume
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        fields.jacobian_determinant(field, (1.0, 0.7, 0.7))  # the output is one volume
        assert tracemalloc.get_traced_memory()[1] - start < 1.75 * volume
    finally:
        tracemalloc.stop()
