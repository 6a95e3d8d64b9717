"""Surface distances of lazy maps slab by slab (:mod:`napari_xaimed.evaluation.slab_distances`):
the values of :func:`distance_metrics` on the in-memory crop, with memory bounded by slabs."""

from __future__ import annotations

import dataclasses
import math

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from napari_xaimed.evaluation import evaluate
from napari_xaimed.evaluation.distances import (
    counted_distance_metrics,
    distance_metrics,
    percentile_from_counts,
)
from napari_xaimed.evaluation.lazy import evaluate_lazy, scan_lazy
from napari_xaimed.evaluation.slab_distances import SlabSurfaces, slab_distance_metrics

WANTED = ("hd", "hd95", "hd95_directed", "assd", "nsd")


def rough_blob(shape: tuple[int, int, int], seed: int, level: float = 0.0) -> np.ndarray:
    """A large connected-ish region with a rough surface (smoothed noise above a level)."""
    noise = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)
    return noise > level


def as_zarr(array: np.ndarray, chunks: tuple[int, int, int]) -> zarr.Array:
    store = zarr.create_array(store={}, shape=array.shape, chunks=chunks, dtype=array.dtype)
    store[:] = array
    return store


def assert_like_in_memory(crops, refs, preds, spacing, tolerance=1.0):
    got = crops.distances(refs, preds, spacing, tolerance, WANTED)
    _, ref_mask, pred_mask = crops.masks(refs, preds)
    expected = distance_metrics(ref_mask, pred_mask, spacing, tolerance, WANTED)
    assert set(got) == set(WANTED)
    for key in WANTED:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-9, err_msg=key)
    return got


def test_percentile_from_counts_is_numpys_linear_percentile():
    rng = np.random.default_rng(0)
    for trial in range(400):
        n = int(rng.integers(1, 500))
        values = np.round(rng.exponential(3.0, n), int(rng.integers(0, 3)))  # many repeats
        distinct, counts = np.unique(values, return_counts=True)
        for q in (0, 1, 5, 50, 94.5, 95, 99.9, 100):
            assert percentile_from_counts(distinct, counts, q) == np.percentile(values, q), (
                trial, q)
    assert math.isnan(percentile_from_counts(np.zeros(0), np.zeros(0, np.int64), 95))


def test_counted_metrics_equal_the_metrics_of_the_repeated_values():
    rng = np.random.default_rng(1)
    a, b = np.round(rng.exponential(2.0, 300), 1), np.round(rng.exponential(1.0, 200), 1)
    counted = counted_distance_metrics(np.unique(a, return_counts=True),
                                       np.unique(b, return_counts=True), 1.0, WANTED)
    pooled = np.concatenate([a, b])
    expected = {"hd": pooled.max(), "hd95": np.percentile(pooled, 95),
                "hd95_directed": max(np.percentile(a, 95), np.percentile(b, 95)),
                "assd": (a.mean() + b.mean()) / 2, "nsd": np.mean(pooled <= 1.0)}
    assert counted["hd95"] == expected["hd95"] and counted["hd"] == expected["hd"]
    for key in WANTED:
        np.testing.assert_allclose(counted[key], expected[key], rtol=1e-12)


@pytest.mark.parametrize("slab", [2, 3, 5])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
def test_a_rough_instance_over_every_slab_equals_the_crop(slab, spacing):
    shape = (36, 30, 34)
    ref = rough_blob(shape, 1, -0.05).astype(np.uint16) * 4
    pred = rough_blob(shape, 2, -0.05).astype(np.uint16) * 9
    reference = da.from_array(ref, chunks=(4, 30, 34))
    scanned = scan_lazy(reference, as_zarr(pred, (6, 15, 17)), slab=slab)
    assert assert_like_in_memory(scanned.crops, (1,), (1,), spacing)["hd"] > 0


def test_a_prediction_far_away_widens_the_window_and_loops_over_slabs(monkeypatch):
    shape = (60, 24, 26)
    ref = np.zeros(shape, np.uint8)
    ref[1:9] = rough_blob((8, 24, 26), 3, -0.2)
    pred = np.zeros(shape, np.uint8)
    pred[50:58, 4:14, 6:20] = 2
    pred[57, 20, 20] = 2  # a lone voxel, far from everything
    looped = []
    points = SlabSurfaces.points

    def counting(self, j, keep=True):
        if not keep:
            looped.append(j)
        return points(self, j, keep)

    monkeypatch.setattr(SlabSurfaces, "points", counting)
    scanned = scan_lazy(da.from_array(ref, chunks=(3, 24, 26)), pred, slab=3)
    for spacing in ((1.0, 1.0, 1.0), (0.6, 2.0, 1.5)):
        assert_like_in_memory(scanned.crops, (1,), (1,), spacing, tolerance=2.0)
    assert looped  # the window did not reach: slabs were read one by one
    # a window wide enough for the whole box finds everything without the loop
    box = scanned.crops.box((1,), (1,))
    args = (ref, np.array([1]), pred, np.array([2]), box, (1.0, 1.0, 1.0), 1.0, WANTED)
    narrow = slab_distance_metrics(*args, planes=3, max_half=1)
    looped.clear()
    wide = slab_distance_metrics(*args, planes=3, max_half=64)
    assert not looped
    for key in WANTED:
        np.testing.assert_allclose(narrow[key], wide[key], rtol=1e-12)


def test_instances_touching_the_volume_border():
    shape = (20, 22, 18)
    ref = np.zeros(shape, np.int32)
    ref[:12, :, 3:] = 5  # touches z = 0, both y faces and the last x face
    ref[11:, 15:, :6] = 5
    pred = np.zeros(shape, np.int32)
    pred[2:, :20, :] = 8  # touches the last z plane and the x faces
    pred[5:9, 5:9, 5:9] = 0  # a hole: an inner surface
    scanned = scan_lazy(as_zarr(ref, (4, 11, 9)), as_zarr(pred, (4, 11, 9)), slab=2)
    assert scanned.crops.box((1,), (1,)) == (slice(0, 20), slice(0, 22), slice(0, 18))
    assert_like_in_memory(scanned.crops, (1,), (1,), (1.2, 0.8, 1.0))


def test_a_merged_group_of_several_references_and_predictions():
    shape = (30, 28, 30)
    blob = rough_blob(shape, 4, -0.1)
    ref = np.where(blob, np.where(np.arange(30)[None, None, :] < 15, 1, 2), 0).astype(np.uint8)
    pred = np.roll(ref, 1, axis=0).astype(np.uint8)
    pred[pred == 2] = 3
    pred[20:24, 2:5, 2:5] = 7  # a third prediction, apart
    scanned = scan_lazy(da.from_array(ref, chunks=(5, 28, 30)), pred, slab=4)
    # compact numbers: references 1, 2; predictions 1, 3, 7 -> 1, 2, 3
    assert_like_in_memory(scanned.crops, (1, 2), (1, 2, 3), (1.0, 0.9, 0.7))
    assert_like_in_memory(scanned.crops, (2,), (1, 3), (1.0, 0.9, 0.7))


def rows_equal(lazy, memory):
    for name in memory.classes:
        assert len(lazy[name].rows) == len(memory[name].rows)
        for row_a, row_b in zip(lazy[name].rows, memory[name].rows, strict=True):
            ra, rb = dataclasses.asdict(row_a), dataclasses.asdict(row_b)
            for key in rb:
                if key in (*WANTED, "cldice", "center_zyx"):
                    np.testing.assert_allclose(ra[key], rb[key], rtol=1e-9, atol=1e-12,
                                               err_msg=key)
                elif isinstance(rb[key], float) and math.isnan(rb[key]):
                    assert math.isnan(ra[key]), key
                else:
                    assert ra[key] == rb[key], key


@pytest.mark.parametrize("metrics", [WANTED, ("hd95", "assd", "cldice")])
def test_evaluate_lazy_rows_equal_evaluate(metrics):
    shape = (32, 30, 28)
    big = rough_blob(shape, 5, -0.3)
    ref = np.where(big, 3, 0).astype(np.uint16)
    ref[2:6, 2:6, 2:6], ref[25:29, 22:26, 3:7] = 10, 11
    split = np.arange(28)[None, None, :] < 14
    pred = np.where(np.roll(big, 1, axis=2), np.where(split, 4, 5), 0).astype(np.uint16)
    pred[2:6, 3:7, 2:6] = 12
    pred[28:31, 2:5, 20:24] = 13  # a false positive
    spacing = (2.0, 0.8, 0.9)
    kwargs = {"spacing": spacing, "instance_input": True, "matching": "many_to_one",
              "threshold": 0.2, "metrics": metrics}
    lazy = evaluate_lazy(da.from_array(ref, chunks=(4, 30, 28)), pred, slab=3, **kwargs)
    memory = evaluate(ref, pred, **kwargs)
    assert any(len(r.prediction_ids) > 1 for r in memory["all"].rows)  # a merged group
    assert lazy["all"].tp == memory["all"].tp
    rows_equal(lazy, memory)


def test_distances_of_a_box_sized_instance_hold_a_fraction_of_the_box(traced_peak):
    """Traced peak allocations (numpy reports its buffers to tracemalloc) of the slab-by-slab
    distances of an instance whose box is the whole volume, read from Zarr a plane at a time,
    stay far below that box's boolean crop, which the in-memory path allocates twice over."""
    shape = (192, 96, 96)
    z, y, x = np.ogrid[:192, :96, :96]
    inside = ((z - 95.5) / 98) ** 2 + ((y - 47.5) / 50) ** 2 + ((x - 47.5) / 50) ** 2 <= 1
    ref = inside.astype(np.uint8)
    reference = as_zarr(ref, (1, 96, 96))
    prediction = as_zarr(np.roll(ref, 1, axis=2), (1, 96, 96))
    crops = scan_lazy(reference, prediction, slab=1).crops
    assert crops.box((1,), (1,)) == tuple(slice(0, n) for n in shape)
    box_bytes = ref.size  # one boolean crop

    slabbed = traced_peak(lambda: crops.distances((1,), (1,), (1.0, 1.0, 1.0), 1.0, WANTED))
    whole = traced_peak(lambda: crops.masks((1,), (1,)))
    assert whole > 2 * box_bytes  # the measurement sees a whole crop
    assert slabbed < 0.2 * box_bytes  # about 0.11 measured
