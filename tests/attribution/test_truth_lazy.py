"""Explanation metrics slab by slab: the in-memory functions' values, errors and a bounded
memory peak."""


import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed.attribution import reference_agreement, relevance_by_region, truth_scores
from napari_xaimed.explanations.truth_lazy import (
    relevance_by_region_lazy,
    truth_scores_lazy,
    truth_scores_steps,
)

KEYS = ("relevance_mass_accuracy", "relevance_rank_accuracy", "auroc", "pointing_game",
        "top_k_precision")


def lazy(array: np.ndarray, planes: int = 1) -> da.Array:
    return da.from_array(array, chunks=(planes, *array.shape[1:]))


def as_zarr(array: np.ndarray, chunks: tuple[int, int, int]) -> zarr.Array:
    store = zarr.create_array(store={}, shape=array.shape, chunks=chunks, dtype=array.dtype)
    store[:] = array
    return store


def tied_heatmap(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Rounded values (many ties), a third of them zero, some negative."""
    heat = np.round(rng.normal(0.3, 1.0, shape), 1)
    heat[rng.random(shape) < 0.35] = 0
    return heat.astype(np.float32)


def assert_same_scores(got: dict, want: dict) -> None:
    assert tuple(got) == KEYS == tuple(want)
    for key in KEYS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("slab", [1, 3, None])
@pytest.mark.parametrize("share", [0.04, 0.7])  # a small mask, and one holding the outside
@pytest.mark.parametrize("k", [0.01, 0.3, 7, 1.0])
def test_scores_equal_the_in_memory_ones(slab, share, k):
    rng = np.random.default_rng(int(share * 100) + (slab or 0))
    shape = (11, 9, 13)
    heat = tied_heatmap(rng, shape)
    mask = rng.random(shape) < share
    spacing = (2.5, 0.8, 1.1)
    for tolerance in (0.0, 1.0, 3.0):
        want = truth_scores(heat, mask, spacing=spacing, tolerance_mm=tolerance, k=k)
        got = truth_scores_lazy(lazy(heat), lazy(mask.astype(np.uint8), 2), spacing=spacing,
                                tolerance_mm=tolerance, k=k, slab=slab)
        assert_same_scores(got, want)


def test_zarr_and_numpy_inputs_and_the_dispatch():
    rng = np.random.default_rng(3)
    heat = tied_heatmap(rng, (8, 10, 10))
    mask = np.zeros(heat.shape, bool)
    mask[2:5, 3:8, 1:6] = True
    want = truth_scores(heat, mask, spacing=(2, 1, 1), tolerance_mm=2.0)
    assert_same_scores(truth_scores_lazy(as_zarr(heat, (3, 10, 10)), as_zarr(mask, (2, 5, 5)),
                                         spacing=(2, 1, 1), tolerance_mm=2.0, slab=3), want)
    assert_same_scores(truth_scores_lazy(heat, mask, spacing=(2, 1, 1), tolerance_mm=2.0),
                       want)
    # truth_scores itself hands a dask input to the slab-by-slab form
    assert_same_scores(truth_scores(lazy(heat), mask, spacing=(2, 1, 1), tolerance_mm=2.0),
                       want)


def test_hand_computed_ties_across_slabs():
    # one voxel per plane: in [2, 1], out [1, 0]; the tie at 1 straddles planes 1 and 2
    heat = np.array([2.0, 1, 1, 0]).reshape(4, 1, 1)
    mask = np.array([1, 1, 0, 0], bool).reshape(4, 1, 1)
    got = truth_scores_lazy(lazy(heat), lazy(mask), slab=1, k=1)
    assert got["relevance_mass_accuracy"] == 3 / 4
    assert got["relevance_rank_accuracy"] == (1 + 0.5) / 2  # the top 2: 2, then half of a tie
    assert got["auroc"] == 3.5 / 4  # 2 beats both, 1 beats 0 and ties 1
    assert got["pointing_game"] == 1.0 and got["top_k_precision"] == 1.0
    constant = truth_scores_lazy(lazy(np.zeros((4, 1, 1))), lazy(mask), slab=1, k=2)
    assert constant == {"relevance_mass_accuracy": pytest.approx(np.nan, nan_ok=True),
                        "relevance_rank_accuracy": 0.5, "auroc": 0.5, "pointing_game": 0.0,
                        "top_k_precision": 0.5}


def test_pointing_game_reaches_the_mask_across_slab_borders():
    heat = np.zeros((9, 6, 6))
    mask = np.zeros(heat.shape, bool)
    heat[3, 2, 2] = heat[7, 4, 4] = 5.0  # two peaks, tied
    mask[5, 2, 2] = True  # 2 planes after the first peak, in another slab of 2 planes
    for slab in (1, 2, 4, None):
        for spacing, tolerance in (((1, 1, 1), 2.0), ((1, 1, 1), 1.9), ((2, 1, 1), 3.9),
                                   ((2, 1, 1), 4.0), ((0.5, 1, 1), 1.0)):
            want = truth_scores(heat, mask, spacing=spacing, tolerance_mm=tolerance)
            got = truth_scores_lazy(lazy(heat), lazy(mask), spacing=spacing,
                                    tolerance_mm=tolerance, slab=slab)
            assert got["pointing_game"] == want["pointing_game"], (slab, spacing, tolerance)
            # one of the two tied peaks is near the mask: half a hit
            assert got["pointing_game"] == 0.5 * (tolerance >= 2 * spacing[0])
    mask[:] = False
    mask[8, 4, 4] = True  # one plane after the second peak: the later slab's peak hits
    for tolerance in (1.0, 0.9):
        want = truth_scores(heat, mask, tolerance_mm=tolerance)["pointing_game"]
        assert want == 0.5 * (tolerance >= 1)
        assert truth_scores_lazy(lazy(heat), lazy(mask), tolerance_mm=tolerance, slab=2)[
            "pointing_game"] == want


def test_progress_per_slab():
    heat, mask = np.ones((5, 4, 4)), np.zeros((5, 4, 4), bool)
    mask[0, 0, 0] = True
    steps = truth_scores_steps(lazy(heat), lazy(mask), slab=2)
    shown = []
    try:
        while True:
            shown.append(next(steps))
    except StopIteration as stop:
        assert stop.value["auroc"] == 0.5
    assert all(isinstance(p, Progress) for p in shown)
    assert [p.done for p in shown] == list(range(9)) and {p.total for p in shown} == {9}


def message(job) -> str:
    with pytest.raises(XaimedError) as info:
        job()
    return str(info.value)


@pytest.mark.parametrize("case", ["2d", "shape", "nan", "inf", "empty", "full", "k", "kfrac",
                                  "tolerance"])
def test_errors_are_the_in_memory_ones(case):
    heat = np.random.default_rng(0).random((6, 5, 5))
    mask = np.zeros(heat.shape, bool)
    mask[1:3, 1:3, 1:3] = True
    kwargs = {}
    if case == "2d":
        heat, mask = heat[0], mask[0]
    elif case == "shape":
        mask = mask[:5]
    elif case in ("nan", "inf"):
        heat[5, 4, 4] = np.nan if case == "nan" else np.inf  # in the last slab
    elif case == "empty":
        mask[:] = False
    elif case == "full":
        mask[:] = True
    elif case in ("k", "kfrac"):
        kwargs["k"] = 10**6 if case == "k" else 1.5
    else:
        kwargs["tolerance_mm"] = -1.0
    want = message(lambda: truth_scores(heat, mask, **kwargs))
    assert message(lambda: truth_scores_lazy(lazy(heat), lazy(mask), slab=2, **kwargs)) == want


def test_traced_peak_stays_far_below_the_volume(traced_peak):
    """A 64x128x128 float32 heatmap read 8 planes at a time with a small mask: the traced
    peak (numpy reports its buffers to tracemalloc) stays far below the volume in float64,
    which the in-memory path allocates (and more: the float64 copy, then the ranks)."""
    rng = np.random.default_rng(0)
    heat = rng.random((64, 128, 128), dtype=np.float32)
    mask = np.zeros(heat.shape, np.uint8)
    mask[30:34, 60:70, 60:70] = 1
    volume_f64 = heat.size * 8
    heat_lazy, mask_lazy = lazy(heat, 8), lazy(mask, 8)

    slabbed = traced_peak(lambda: truth_scores_lazy(heat_lazy, mask_lazy, k=0.001, slab=8))
    whole = traced_peak(lambda: truth_scores(heat, mask, k=0.001))
    assert whole > volume_f64  # the measurement sees a whole float64 copy
    assert slabbed < 0.35 * volume_f64  # about 0.28 measured (whole: about 9.1)


@pytest.mark.parametrize("slab", [1, 3, None])
def test_by_region_equals_the_in_memory_table(slab):
    rng = np.random.default_rng(slab or 0)
    shape = (10, 8, 9)
    heat = tied_heatmap(rng, shape).astype(np.float64)
    labels = np.zeros(shape, np.uint16)
    labels[:4] = rng.choice([0, 17, 3], size=(4, 8, 9))
    labels[6:] = rng.choice([0, 1000, 3, 5], size=(4, 8, 9))  # regions first seen late
    names = {17: "hippocampus", 1000: "cortex"}
    want = relevance_by_region(heat, labels, names=names, spacing=(2, 1, 0.5))
    for lab in (lazy(labels, 2), as_zarr(labels, (3, 8, 9)), labels.astype(float)):
        got = relevance_by_region_lazy(lazy(heat), lab, names=names, spacing=(2, 1, 0.5),
                                       slab=slab)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-12)
        assert (got["sum"].to_numpy() == want["sum"].to_numpy()).all()  # summed in order
    pd.testing.assert_frame_equal(relevance_by_region(lazy(heat), labels, names=names,
                                                      spacing=(2, 1, 0.5)), want,
                                  check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("case", ["2d", "complex", "shape", "nan", "negative", "fraction",
                                  "empty"])
def test_by_region_errors_are_the_in_memory_ones(case):
    heat = np.random.default_rng(0).random((6, 5, 5))
    labels = np.ones(heat.shape, np.int32)
    if case == "2d":
        heat, labels = heat[0], labels[0]
    elif case == "complex":
        heat = heat.astype(complex)
    elif case == "shape":
        labels = labels[:5]
    elif case == "nan":
        heat[4, 0, 0] = np.nan
    elif case == "negative":
        labels[5, 0, 0] = -2
    elif case == "fraction":
        labels = labels.astype(float)
        labels[3, 1, 1] = 1.5
    else:
        labels[:] = 0
    want = message(lambda: relevance_by_region(heat, labels))
    assert message(lambda: relevance_by_region_lazy(lazy(heat), lazy(labels), slab=2)) == want


def test_reference_agreement_refuses_lazy_maps():
    heat = np.random.default_rng(0).random((6, 5, 5))
    said = message(lambda: reference_agreement(lazy(heat), heat))
    assert "read lazily" in said and "crop in memory" in said
