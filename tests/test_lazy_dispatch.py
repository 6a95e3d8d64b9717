"""The in-memory-or-lazy choice is made by the core's public functions: ``evaluate``,
``segment``, ``attribute`` (and their ``*_steps``) and the truth scores take a numpy or a dask
array and give the same numbers; a dask array is never read whole.

"Larger than memory" is simulated by making the memory check see 1 KiB available, so any whole
read of a dask array is refused (:func:`napari_xaimed._core.validate.check_fits_in_memory`).
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage.filters import threshold_otsu
from skimage.measure import label as skimage_label

from napari_xaimed import XaimedError
from napari_xaimed._core import validate as _validate
from napari_xaimed._core.progress import run_steps
from napari_xaimed.attribution import attribute, attribute_steps
from napari_xaimed.evaluation import evaluate, evaluate_steps
from napari_xaimed.explanations.truth_lazy import truth_scores_steps
from napari_xaimed.samples import lesion_volume
from napari_xaimed.segmentation import segment, segment_steps


@pytest.fixture
def little_memory(monkeypatch):
    """Only 1 KiB of memory available: a dask array read whole is refused."""
    monkeypatch.setattr(_validate, "_available_memory", lambda: 1024)


def test_a_whole_read_is_refused_under_the_fixture(little_memory):
    """The premise of this file: without the dispatch, the in-memory path refuses dask input."""
    with pytest.raises(XaimedError, match="larger than half the memory"):
        _validate.as_volume(da.zeros((8, 8, 8), chunks=(2, 8, 8)))


def test_evaluate_takes_dask_maps_slab_by_slab(little_memory):
    """A hand-computed case: a 4^3 reference cube, its prediction shifted by one voxel (48 of
    80 voxels shared: IoU 0.6) and a 2^3 false positive: TP 1, FP 1, FN 0, SQ 0.6,
    RQ 1 / (1 + 0.5) = 2/3, PQ 0.4."""
    reference = np.zeros((14, 14, 14), np.uint16)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6, 2:6] = 1
    prediction[2:6, 2:6, 3:7] = 1
    prediction[10:12, 10:12, 10:12] = 2
    lazy_ref = da.from_array(reference, chunks=(3, 14, 14))
    lazy_pred = da.from_array(prediction, chunks=(3, 14, 14))
    for result in (evaluate(lazy_ref, lazy_pred, instance_input=True),
                   run_steps(evaluate_steps(lazy_ref, prediction, instance_input=True,
                                            slab=2))):
        assert result.params["lazy"] is True
        c = result["all"]
        assert (c.tp, c.fp, c.fn) == (1, 1, 0)
        assert c.sq == pytest.approx(0.6) and c.rq == pytest.approx(2 / 3)
        assert c.pq == pytest.approx(0.4)
        (row,) = [r for r in c.rows if r.accepted]
        assert row.iou == pytest.approx(0.6) and row.dice == pytest.approx(0.75)


def test_evaluate_refuses_whole_volume_options_for_dask_maps(little_memory):
    maps = da.zeros((6, 6, 6), np.uint8, chunks=(2, 6, 6))
    for option in ({"voronoi": True}, {"keep_maps": True},
                   {"parts": {"t": {"thing": [1], "parts": {"p": [1]}}}}):
        with pytest.raises(XaimedError, match="larger than memory"):
            evaluate(maps, maps, **option)


def blobs() -> np.ndarray:
    rng = np.random.default_rng(4)
    volume = rng.normal(0.0, 0.1, (20, 18, 16)).astype(np.float32)
    volume[3:8, 4:9, 3:8] += 1.0
    volume[12:17, 10:15, 9:14] += 1.5
    volume[9, 2, 2] += 1.2  # a one-voxel component
    return volume


def test_segment_takes_a_dask_volume_slab_by_slab(little_memory, tmp_path):
    """Otsu on a dask volume: scikit-image's threshold and connected components (26-connected,
    numbered in raster order), as in memory, written to the store given."""
    volume = blobs()
    expected = skimage_label(volume > threshold_otsu(volume), connectivity=3)
    assert expected.max() == 3
    lazy = da.from_array(volume, chunks=(4, 18, 16))
    got = segment(lazy, "otsu")
    assert isinstance(got, da.Array)
    np.testing.assert_array_equal(got.compute(), expected)
    result = run_steps(segment_steps(lazy, "otsu", out=tmp_path / "labels.zarr",
                                     origin=(1.0, 2.0, 3.0)))
    np.testing.assert_array_equal(result.labels.compute(), expected)
    assert result.kind == "instances" and result.facts["n_instances"] == 3
    assert result.facts["labels_store"] == str(tmp_path / "labels.zarr")
    assert result.facts["threshold"] == pytest.approx(threshold_otsu(volume))
    np.testing.assert_array_equal(segment(volume, "otsu"), expected)  # numpy: the same


def test_segment_refuses_what_a_dask_volume_cannot_do(little_memory, tmp_path):
    lazy = da.from_array(blobs(), chunks=(4, 18, 16))
    for method, params, message in (("kmeans", {}, "only .otsu., .threshold. and .model."),
                                    ("otsu", {"smoothing_mm": 1.0}, "smoothing"),
                                    ("model", {"largest_component": True}, "largest component"),
                                    ("model", {"model_spacing": (2.0, 2.0, 2.0)},
                                     "model's spacing")):
        with pytest.raises(XaimedError, match=message):
            run_steps(segment_steps(lazy, method, out=tmp_path / f"{method}.zarr", **params))


def test_attribute_takes_a_dask_volume(little_memory):
    """The bundled classifier resizes its input, so a dask volume is read slab by slab into
    the model's input and the map brought back lazily: the in-memory map."""
    lesion = lesion_volume(shape=(40, 48, 44), spacing=(1.5, 1.0, 0.8), seed=3)
    lazy = da.from_array(lesion.image, chunks=(8, 48, 44))
    memory = attribute("bundled", lesion.image, "saliency", target=1, spacing=lesion.spacing)
    for result in (attribute("bundled", lazy, "saliency", target=1, spacing=lesion.spacing),
                   run_steps(attribute_steps("bundled", lazy, "saliency", target=1,
                                             spacing=lesion.spacing))):
        assert isinstance(result.map, da.Array) and "lazy" in result.params
        np.testing.assert_allclose(result.map.compute(), memory.map,
                                   atol=1e-4 * np.abs(memory.map).max())
        assert result.scores == pytest.approx(memory.scores, rel=1e-5)


def test_truth_scores_steps_take_numpy_and_dask_alike(little_memory):
    """A hand-computed case: relevance only inside the mask (mass accuracy 1, the maximum
    inside), on 10 of its 64 voxels: AUROC = 10/64 + 0.5 * 54/64 (ties count a half)."""
    mask = np.zeros((10, 10, 10), bool)
    mask[2:6, 2:6, 2:6] = True
    heat = np.zeros((10, 10, 10), np.float32)
    heat[2:6, 2:6, 2:6].flat[:10] = np.arange(1, 11)
    for h, m in ((heat, mask), (da.from_array(heat, chunks=(3, 10, 10)),
                                da.from_array(mask, chunks=(3, 10, 10)))):
        scores = run_steps(truth_scores_steps(h, m))
        assert scores["relevance_mass_accuracy"] == pytest.approx(1.0)
        assert scores["pointing_game"] == 1.0
        assert scores["auroc"] == pytest.approx(37 / 64)


def test_register_takes_dask_volumes_through_downsampled_copies(little_memory):
    """A known smooth deformation (the longitudinal sample's): registering the dask pair gives
    a LazyRegistration whose coarse field, read at full resolution, recovers it."""
    from napari_xaimed.registration import LazyRegistration, register
    from napari_xaimed.registration.lazy import _CoarseField
    from napari_xaimed.samples import longitudinal_pair

    sample = longitudinal_pair((48, 64, 64), spacing=(1.5, 1.0, 1.0), max_displacement_mm=3.0,
                               seed=3)
    fixed = da.from_array(sample.fixed, chunks=(8, 64, 64))
    moving = da.from_array(sample.moving, chunks=(8, 64, 64))
    result = register(fixed, moving, fixed_spacing=sample.spacing, moving_spacing=sample.spacing,
                      transform="SyN", shrink=2, seed=0)
    assert isinstance(result, LazyRegistration) and result.fixed_factors == (2, 2, 2)
    field = _CoarseField(result.coarse.displacement, result.coarse_spacing, result.coarse_origin)
    recovered = field.on_slab(slice(0, 48), (48, 64, 64), sample.spacing, (0.0, 0.0, 0.0))
    error = np.linalg.norm(recovered - sample.displacement, axis=-1)[sample.body]
    before = np.linalg.norm(sample.displacement, axis=-1)[sample.body]
    assert error.mean() < 0.5 * before.mean() and error.mean() < 1.5


def test_explain_change_takes_dask_scans_on_block_mean_copies(little_memory):
    """Dask scans are explained on 2x2x2 block means (computed here with numpy's reshape) on
    the coarse grid: voxel size doubled, origin at the first block's centre."""
    from napari_xaimed.longitudinal import explain_change
    from napari_xaimed.samples import longitudinal_pair

    pair = longitudinal_pair(seed=0, new_lesion_radius_mm=6.0)
    shape = tuple(n // 2 * 2 for n in pair.fixed.shape)
    prior, current = (a[:shape[0], :shape[1], :shape[2]] for a in (pair.moving, pair.fixed))

    def block_mean(a):
        z, y, x = (n // 2 for n in a.shape)
        return a.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5), dtype=np.float64)

    spacing = np.asarray(pair.spacing)
    coarse_spacing, coarse_origin = tuple(2 * spacing), tuple(0.5 * spacing)
    expected = explain_change(block_mean(prior).astype(np.float32),
                              block_mean(current).astype(np.float32), "bundled",
                              spacing=coarse_spacing, origin=coarse_origin,
                              prior_spacing=coarse_spacing, prior_origin=coarse_origin,
                              registration="identity", device="cpu")
    got = explain_change(da.from_array(prior, chunks=(8, -1, -1)),
                         da.from_array(current, chunks=(8, -1, -1)), "bundled",
                         spacing=pair.spacing, registration="identity", device="cpu",
                         max_voxels=int(np.prod(shape)) // 8)
    assert got.params["lazy"]["current_factors"] == [2, 2, 2]
    np.testing.assert_allclose(got.spacing, coarse_spacing)
    np.testing.assert_allclose(got.origin, coarse_origin)
    np.testing.assert_allclose(got.change, expected.change,
                               atol=1e-4 * np.abs(expected.change).max())
    with pytest.raises(XaimedError, match="registration=None"):
        explain_change(da.from_array(prior), current, "bundled", spacing=pair.spacing,
                       registration=np.zeros((*shape, 3), np.float32))
