"""Volumes larger than memory: lazy reading (Zarr, memory-mapped NIfTI) and the slab-by-slab
segmentation, evaluation and attribution, each against the in-memory path (or scikit-image,
nibabel, torch) on small volumes cut into several slabs."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from skimage.filters import threshold_multiotsu, threshold_otsu

from napari_xaimed import XaimedError
from napari_xaimed._core.progress import run_steps
from napari_xaimed.attribution import attribute
from napari_xaimed.attribution.lazy import attribute_lazy, downsample_lazy, upsample_lazy
from napari_xaimed.evaluation import DISTANCE_METRICS, evaluate
from napari_xaimed.evaluation.lazy import evaluate_lazy
from napari_xaimed.io import read_volume, write_volume
from napari_xaimed.io.lazy import read_zarr, write_zarr
from napari_xaimed.models.preprocess import Preprocessing, to_input
from napari_xaimed.samples import lesion_volume, panoptic_pair
from napari_xaimed.segmentation import segment, split_instances
from napari_xaimed.segmentation.lazy import label_lazy, otsu_threshold_lazy, segment_lazy

DISTANCES = ("hd", "hd95", "hd95_directed", "assd", "nsd", "cldice", "center_zyx")


def tree_digest(path: Path) -> str:
    """SHA-256 over every file (names and bytes) under ``path``: to show nothing changed."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def lesion():
    return lesion_volume(shape=(40, 48, 44), spacing=(1.5, 1.0, 0.8), seed=3)


# -- reading and writing ----------------------------------------------------------------------

def test_zarr_round_trip_keeps_voxels_spacing_and_origin(tmp_path):
    data = np.random.default_rng(0).normal(size=(11, 9, 7)).astype(np.float32)
    write_zarr(tmp_path / "ct.zarr", data, spacing=(2.5, 0.8, 0.7), origin=(10.0, -4.0, 3.5),
               chunks=(4, 5, 7))
    volume = read_volume(tmp_path / "ct.zarr")
    assert isinstance(volume.data, da.Array)
    np.testing.assert_array_equal(volume.data.compute(), data)
    assert volume.spacing == (2.5, 0.8, 0.7)
    assert volume.translate == pytest.approx((10.0, -4.0, 3.5))
    # NIfTI convention: voxel (x, y, z) = (1, 2, 3) lies at origin + index * spacing
    np.testing.assert_allclose(volume.affine @ [1, 2, 3, 1], [3.5 + 0.7, -4.0 + 1.6, 17.5, 1])
    # OME-NGFF metadata that other tools read: scale and translation in mm
    ome = zarr.open_group(str(tmp_path / "ct.zarr"), mode="r").attrs["ome"]["multiscales"][0]
    assert ome["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.5, 0.8, 0.7]
    assert {a["unit"] for a in ome["axes"]} == {"millimeter"}


def test_zarr_keeps_an_oblique_affine_and_provenance(tmp_path):
    angle = np.deg2rad(25)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0],
                               [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ np.diag(
        [0.7, 0.8, 2.0])
    affine[:3, 3] = [5.0, -3.0, 12.0]
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_zarr(tmp_path / "o.zarr", data, spacing=(2.0, 0.8, 0.7), affine=affine,
               metadata={"kind": "test", "value": np.float32(1.5)})
    volume = read_volume(tmp_path / "o.zarr")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-12)
    assert volume.metadata == {"kind": "test", "value": 1.5}


def test_zarr_without_spacing_says_what_to_do_and_changes_nothing(tmp_path):
    store = tmp_path / "bare.zarr"
    array = zarr.open_array(str(store), mode="w", shape=(6, 5, 4), dtype="f4")
    array[:] = np.ones((6, 5, 4), np.float32)
    before = tree_digest(store)
    with pytest.raises(XaimedError, match=r"spacing=.*write_zarr"):
        read_volume(store)
    assert tree_digest(store) == before
    volume = read_volume(store, spacing=(3.0, 1.0, 1.0))
    assert volume.spacing == (3.0, 1.0, 1.0)
    np.testing.assert_array_equal(volume.data.compute(), 1.0)
    assert tree_digest(store) == before


def test_zarr_spacing_from_an_attribute_and_from_ome_ngff_0_4_units(tmp_path):
    bare = zarr.open_array(str(tmp_path / "attr.zarr"), mode="w", shape=(3, 4, 5), dtype="u1")
    bare.attrs.update({"spacing": [2.0, 0.5, 0.5], "origin": [1.0, 2.0, 3.0]})
    volume = read_zarr(tmp_path / "attr.zarr")
    assert volume.spacing == (2.0, 0.5, 0.5) and volume.translate == pytest.approx((1, 2, 3))
    # OME-NGFF 0.4 (multiscales in the group's attributes) in micrometres
    group = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    group.create_array("s0", shape=(3, 4, 5), dtype="u2")
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [2000.0, 500.0, 250.0]}]}]}]
    volume = read_volume(tmp_path / "v04.zarr")
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.25))
    assert volume.data.shape == (3, 4, 5)


def test_write_zarr_refuses_an_existing_store_and_keeps_it(tmp_path):
    store = write_zarr(tmp_path / "a.zarr", np.ones((2, 3, 4), np.float32), spacing=(1, 1, 1))
    before = tree_digest(store)
    with pytest.raises(XaimedError, match="already exists.*overwrite=True"):
        write_zarr(store, np.zeros((2, 3, 4), np.float32), spacing=(1, 1, 1))
    assert tree_digest(store) == before
    with pytest.raises(XaimedError, match="end in .zarr"):
        write_zarr(tmp_path / "a.nii", np.zeros((2, 3, 4)), spacing=(1, 1, 1))


def test_lazy_nifti_is_a_memory_map_with_the_in_memory_geometry(tmp_path):
    data = np.random.default_rng(1).normal(size=(9, 8, 7)).astype(np.float32)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    write_volume(tmp_path / "ct.nii", data, affine=affine)
    eager, lazy = read_volume(tmp_path / "ct.nii"), read_volume(tmp_path / "ct.nii", lazy=True)
    assert isinstance(lazy.data, da.Array)
    # the graph reads from a memory map of the file, not from a loaded copy
    sources = [v for v in lazy.data.__dask_graph__().values() if isinstance(v, np.ndarray)]
    assert sources and all(isinstance(v, np.memmap) for v in sources)
    np.testing.assert_array_equal(lazy.data[2:5].compute(), eager.data[2:5])
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    assert lazy.spacing == eager.spacing
    np.testing.assert_array_equal(lazy.affine, eager.affine)


def test_lazy_nifti_gz_with_scaling_equals_nibabel(tmp_path):
    xyz = np.random.default_rng(2).integers(0, 500, size=(6, 5, 4)).astype(np.int16)
    img = nib.Nifti1Image(xyz, np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    lazy = read_volume(tmp_path / "s.nii.gz", lazy=True)
    expected = np.asanyarray(nib.load(str(tmp_path / "s.nii.gz")).dataobj).T
    np.testing.assert_allclose(lazy.data.compute(), expected)
    assert lazy.spacing == (2.0, 1.0, 1.0)


def test_lazy_is_refused_for_formats_without_it(tmp_path):
    write_volume(tmp_path / "ct.nrrd", np.zeros((3, 4, 5), np.float32))
    with pytest.raises(XaimedError, match="NIfTI files and Zarr stores"):
        read_volume(tmp_path / "ct.nrrd", lazy=True)


def test_reader_opens_zarr_and_large_nifti_as_dask(tmp_path, monkeypatch):
    from napari_xaimed.viewer import reader as _reader

    data = np.random.default_rng(3).normal(size=(8, 9, 10)).astype(np.float32)
    write_zarr(tmp_path / "ct.zarr", data, spacing=(2.0, 0.5, 0.5), origin=(4.0, 0.0, 1.0))
    reader = _reader.get_reader(str(tmp_path / "ct.zarr"))
    assert reader is not None
    (layer_data, kwargs, kind), = reader(str(tmp_path / "ct.zarr"))
    assert kind == "image" and isinstance(layer_data, da.Array)
    assert kwargs["scale"] == (2.0, 0.5, 0.5) and kwargs["translate"] == (4.0, 0.0, 1.0)
    assert kwargs["name"] == "ct"
    write_volume(tmp_path / "big.nii", data)
    (small, _, _), = _reader.read_volumes(str(tmp_path / "big.nii"))
    assert isinstance(small, np.ndarray)
    monkeypatch.setattr(_reader, "LAZY_NIFTI_BYTES", 100)  # "larger than memory" for the test
    (large, _, _), = _reader.read_volumes(str(tmp_path / "big.nii"))
    assert isinstance(large, da.Array)
    np.testing.assert_array_equal(large.compute(), small)


# -- segmentation -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,classes", [(np.float32, 2), (np.float32, 3), (np.int16, 2),
                                           (np.float64, 4)])
def test_lazy_otsu_equals_scikit_image(lesion, dtype, classes):
    volume = (lesion.image * 300).astype(dtype)
    expected = (threshold_otsu(volume) if classes == 2
                else threshold_multiotsu(volume, classes=classes)[-1])
    for slab in (1, 7, 40):
        assert otsu_threshold_lazy(volume, classes=classes, slab=slab) == expected


def test_lazy_otsu_refuses_constant_and_nan_volumes():
    with pytest.raises(XaimedError, match="constant"):
        otsu_threshold_lazy(np.full((4, 5, 6), 3.0, np.float32), slab=2)
    volume = np.ones((4, 5, 6), np.float32)
    volume[3, 0, 0] = np.nan
    with pytest.raises(XaimedError, match="NaN"):
        otsu_threshold_lazy(volume, slab=2)


def same_up_to_relabelling(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label maps have the same partition (a one-to-one map between ids)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1])))


@pytest.mark.parametrize("connectivity", [6, 18, 26])
def test_lazy_labels_equal_split_instances(tmp_path, connectivity):
    # below the percolation threshold of each connectivity: many components, some large
    fraction = {6: 0.25, 18: 0.13, 26: 0.08}[connectivity]
    mask = np.random.default_rng(connectivity).random((30, 25, 20)) < fraction
    spacing = (2.0, 1.0, 0.5)
    expected = split_instances(mask, spacing=spacing, min_size_mm3=3.0,
                               connectivity=connectivity)
    labels, n = label_lazy(da.from_array(mask, chunks=(4, 25, 20)), tmp_path / "l.zarr",
                           spacing=spacing, min_size_mm3=3.0, connectivity=connectivity,
                           slab=4)
    got = labels.compute()
    assert n == int(expected.max()) > 10
    assert same_up_to_relabelling(got, expected)
    np.testing.assert_array_equal(got, expected)  # even the numbering: raster order


def test_lazy_labels_merge_across_every_slab_boundary(tmp_path):
    mask = np.zeros((12, 6, 6), bool)
    for z in range(12):  # a diagonal staircase: touches its next plane only at a corner
        mask[z, z % 6, (z // 2) % 6] = True
    for connectivity in (6, 26):
        labels, n = label_lazy(mask, tmp_path / f"s{connectivity}.zarr",
                               connectivity=connectivity, slab=1)
        expected = split_instances(mask, connectivity=connectivity)
        assert n == int(expected.max())
        np.testing.assert_array_equal(labels.compute(), expected)
    assert int(split_instances(mask, connectivity=26).max()) < int(
        split_instances(mask, connectivity=6).max())


def test_segment_lazy_equals_segment_from_a_zarr_store(tmp_path, lesion):
    store = write_zarr(tmp_path / "ct.zarr", lesion.image, spacing=lesion.spacing,
                       chunks=(6, 48, 44))
    before = tree_digest(store)
    volume = read_volume(store)
    for params in ({"method": "otsu", "classes": 3, "min_size_mm3": 20.0},
                   {"method": "otsu", "classes": 2, "connectivity": 6},
                   {"method": "threshold", "value": 0.5, "min_size_mm3": 5.0}):
        out = tmp_path / f"labels-{params['method']}-{params.get('classes')}.zarr"
        result = segment_lazy(volume.data, out, spacing=volume.spacing, **params)
        expected = segment(lesion.image, spacing=lesion.spacing, **params)
        assert result.n_instances == int(expected.max()) >= 1
        np.testing.assert_array_equal(result.labels.compute(), expected)
        reread = read_volume(out)
        assert reread.is_label and reread.spacing == lesion.spacing
        assert reread.metadata["instances"] == result.n_instances
    assert tree_digest(store) == before


def test_segment_lazy_refuses_what_needs_the_whole_volume(tmp_path, lesion):
    volume = lesion.image
    for kwargs, message in (({"method": "kmeans"}, "not available for volumes larger"),
                            ({"smoothing_mm": 1.0}, "smoothing"),
                            ({"fill_holes": True}, "hole filling"),
                            ({"split": "watershed"}, "watershed"),
                            ({"method": "threshold"}, "value=")):
        with pytest.raises(XaimedError, match=message):
            segment_lazy(volume, tmp_path / "x.zarr", **kwargs)
    segment_lazy(volume, tmp_path / "kept.zarr", classes=3)
    before = tree_digest(tmp_path / "kept.zarr")
    with pytest.raises(XaimedError, match="already exists"):
        segment_lazy(volume, tmp_path / "kept.zarr")
    assert tree_digest(tmp_path / "kept.zarr") == before


def test_segment_lazy_steps_report_every_slab_and_check_before_the_first(tmp_path, lesion):
    """The step form: progress rises to its total through Otsu's two passes and the two
    labelling passes (a step per slab each), ends with segment_lazy's labels; bad options
    and an existing store are refused when it is called, before any voxel is read."""
    from napari_xaimed.segmentation.lazy import segment_lazy_steps

    volume = lesion.image
    planes = 4
    slabs = -(-volume.shape[0] // planes)
    steps = segment_lazy_steps(volume, tmp_path / "a.zarr", "otsu", lesion.spacing, classes=3,
                               slab=planes)
    seen = []
    result = run_steps(steps, seen.append)
    assert len(seen) == 4 * slabs  # value range, histogram, components, numbering
    fractions = [p.done / p.total for p in seen]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < 0.25 < fractions[-1] < 1
    assert seen[0].message.startswith("Otsu: value range")
    expected = segment_lazy(volume, tmp_path / "b.zarr", "otsu", lesion.spacing, classes=3)
    np.testing.assert_array_equal(result.labels.compute(), expected.labels.compute())
    mask_steps = []
    run_steps(segment_lazy_steps(volume, tmp_path / "m.zarr", "threshold", value=0.5,
                                 instances=False, slab=planes), mask_steps.append)
    assert len(mask_steps) == slabs and mask_steps[-1].message.startswith("mask")

    class Untouchable(np.ndarray):
        def __getitem__(self, key):
            raise AssertionError("a voxel was read")

    untouchable = volume.view(Untouchable)
    for kwargs, message in (({"method": "threshold"}, "value="),
                            ({"classes": 1}, "classes"),
                            ({"connectivity": 5}, "connectivity"),
                            ({"opening_mm": 1.0}, "opening")):
        with pytest.raises(XaimedError, match=message):
            segment_lazy_steps(untouchable, tmp_path / "c.zarr", **kwargs)
    with pytest.raises(XaimedError, match="already exists"):
        segment_lazy_steps(untouchable, tmp_path / "a.zarr")
    assert not (tmp_path / "c.zarr").exists()


# -- evaluation -------------------------------------------------------------------------------

def assert_same_result(lazy, memory):
    assert list(lazy.classes) == list(memory.classes)
    for name in memory.classes:
        a, b = lazy[name], memory[name]
        for key in ("tp", "fp", "fn", "pq", "sq", "rq", "n_reference", "n_prediction",
                    "missed_reference_ids", "false_positive_ids", "missed_voxels",
                    "false_positive_voxels"):
            va, vb = getattr(a, key), getattr(b, key)
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), key
        for key in ("missed_centres", "false_positive_centres"):
            for k in getattr(b, key):
                np.testing.assert_allclose(getattr(a, key)[k], getattr(b, key)[k])
        assert len(a.rows) == len(b.rows)
        for row_a, row_b in zip(a.rows, b.rows, strict=True):
            ra, rb = dataclasses.asdict(row_a), dataclasses.asdict(row_b)
            for key in rb:
                if key in DISTANCES:
                    np.testing.assert_allclose(ra[key], rb[key], rtol=1e-9, atol=1e-9)
                elif isinstance(rb[key], float) and math.isnan(rb[key]):
                    assert math.isnan(ra[key])
                else:
                    assert ra[key] == rb[key], key  # Dice, IoU, RVD, sizes, ids: exactly


@pytest.fixture(scope="module")
def pair():
    return panoptic_pair(shape=(48, 56, 52), spacing=(1.5, 1.0, 0.8), n_things=12, seed=2)


@pytest.mark.parametrize("matching", ["one_to_one", "many_to_one", "one_to_many"])
def test_lazy_evaluation_equals_evaluate_on_instances(pair, matching):
    reference = da.from_array(pair.reference, chunks=(5, 56, 52))
    lazy = evaluate_lazy(reference, pair.prediction, spacing=pair.spacing, matching=matching,
                         instance_input=True, slab=5, metrics=DISTANCE_METRICS)
    memory = evaluate(pair.reference, pair.prediction, spacing=pair.spacing, matching=matching,
                      instance_input=True, metrics=DISTANCE_METRICS)
    assert memory["all"].tp > 0 and memory["all"].fp + memory["all"].fn > 0
    assert_same_result(lazy, memory)


def test_lazy_evaluation_equals_evaluate_on_semantic_classes(pair, tmp_path):
    classes = {"body": [1], "lesion": [1, 2]}
    lazy = evaluate_lazy(pair.reference_semantic, pair.prediction_semantic,
                         spacing=pair.spacing, classes=classes, match_metric="dice",
                         threshold=0.3, slab=7, workdir=tmp_path, metrics=DISTANCE_METRICS)
    memory = evaluate(pair.reference_semantic, pair.prediction_semantic, spacing=pair.spacing,
                      classes=classes, match_metric="dice", threshold=0.3,
                      metrics=DISTANCE_METRICS)
    assert_same_result(lazy, memory)
    assert list(tmp_path.iterdir()) == []  # the components' stores are cleaned up


def test_lazy_evaluation_of_zarr_stores_with_a_class_selection(pair, tmp_path):
    ref = read_volume(write_zarr(tmp_path / "ref.zarr", pair.reference, pair.spacing,
                                 chunks=(8, 28, 26), is_label=True))
    pred = read_volume(write_zarr(tmp_path / "pred.zarr", pair.prediction, pair.spacing,
                                  chunks=(8, 28, 26), is_label=True))
    before = tree_digest(tmp_path)
    ids = sorted(set(np.unique(pair.reference)) - {0})[:5]
    kwargs = {"spacing": pair.spacing, "instance_input": True, "classes": {"some": ids},
              "metrics": ("hd95", "assd", "nsd")}
    lazy = evaluate_lazy(ref.data, pred.data, **kwargs)
    assert_same_result(lazy, evaluate(pair.reference, pair.prediction, **kwargs))
    assert tree_digest(tmp_path) == before


def test_lazy_evaluation_refuses_whole_volume_options(pair):
    for option in ({"parts": pair.parts}, {"voronoi": True}, {"keep_maps": True}):
        with pytest.raises(XaimedError, match="not available for volumes larger than memory"):
            evaluate_lazy(pair.reference_semantic, pair.prediction_semantic, **option)
    with pytest.raises(XaimedError, match="integer labels"):
        evaluate_lazy(pair.reference.astype(np.float32), pair.prediction)
    with pytest.raises(XaimedError, match="differ in shape"):
        evaluate_lazy(pair.reference, pair.prediction[1:])


# -- attribution ------------------------------------------------------------------------------

@pytest.mark.parametrize("prep", [Preprocessing("zscore"), Preprocessing("minmax"),
                                  Preprocessing("window", window=(0.2, 0.8)),
                                  Preprocessing("none")])
def test_lazy_downsample_equals_the_models_input(lesion, prep):
    for size in ((32, 32, 32), (7, 5, 9)):
        expected = to_input(lesion.image, dataclasses.replace(prep, input_size=size),
                            torch.device("cpu"))[0, 0].numpy()
        got = downsample_lazy(da.from_array(lesion.image, chunks=(6, 48, 44)), size, prep,
                              slab=6)
        np.testing.assert_allclose(got, expected, atol=1e-5 * max(1, np.abs(expected).max()))


def test_lazy_upsample_equals_torch_interpolate():
    small = np.random.default_rng(4).normal(size=(8, 6, 5)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(small)[None, None], size=(37, 20, 23),
                             mode="trilinear", align_corners=False)[0, 0].numpy()
    got = upsample_lazy(small, (37, 20, 23), chunks=(6, 7, 23))
    assert isinstance(got, da.Array)
    np.testing.assert_allclose(got.compute(), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_lazy_attribution_is_finite_on_the_grid_and_equals_attribute(lesion, method, tmp_path):
    volume = lesion.image.copy()
    lazy = attribute_lazy("bundled", da.from_array(volume, chunks=(8, 48, 44)), method,
                          target=1, spacing=lesion.spacing, slab=8)
    memory = attribute("bundled", lesion.image, method, target=1, spacing=lesion.spacing)
    assert isinstance(lazy.map, da.Array) and lazy.map.shape == lesion.image.shape
    got = lazy.map.compute()
    assert np.all(np.isfinite(got)) and np.abs(got).max() > 0
    np.testing.assert_allclose(got, memory.map, atol=1e-4 * np.abs(memory.map).max())
    assert lazy.scores == pytest.approx(memory.scores, rel=1e-5)
    np.testing.assert_array_equal(volume, lesion.image)  # the input is not modified
    written = attribute_lazy("bundled", volume, method, target=1, out=tmp_path / "m.zarr",
                             spacing=lesion.spacing)
    np.testing.assert_allclose(read_volume(tmp_path / "m.zarr").data.compute(),
                               written.map.compute())
    assert read_volume(tmp_path / "m.zarr").spacing == lesion.spacing


def test_lazy_attribution_of_full_size_models_runs_sliding_windows(lesion, tmp_path):
    """A model without input_size goes the sliding-window path (tests/test_lazy_windows.py
    checks its numbers); a region on a classifier is refused."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1))
    result = attribute_lazy(net, lesion.image, "saliency", region=lesion.mask, device="cpu",
                            roi_size=32, workdir=tmp_path)
    assert result.map.shape == lesion.image.shape
    assert result.params["lazy"]["sliding_window"] and result.params["region"] == "given mask"
    with pytest.raises(XaimedError, match="region"):
        attribute_lazy("bundled", lesion.image, "saliency", region=lesion.mask)


# -- bounded memory ---------------------------------------------------------------------------

def test_lazy_paths_hold_memory_that_does_not_grow_with_depth(tmp_path):
    """Traced peak allocations (numpy reports its buffers to tracemalloc) of each lazy job on
    a volume 4 times deeper stay about the same, and far below the volume's size."""
    import tracemalloc

    import dask

    def volume(depth):
        data = np.random.default_rng(0).normal(size=(depth, 96, 96)).astype(np.float32)
        return da.from_array(data, chunks=(4, 96, 96))

    def labels(depth):
        data = np.zeros((depth, 96, 96), np.uint16)
        for i in range(depth // 8):
            data[i * 8 + 1:i * 8 + 5, 10:20, 10 + i % 60:20 + i % 60] = i + 1
        return da.from_array(data, chunks=(4, 96, 96))

    def traced_peaks(depth):
        image, instances = volume(depth), labels(depth)
        jobs = {
            "segment": lambda: segment_lazy(image, tmp_path / f"s{depth}.zarr", slab=4,
                                            overwrite=True),
            "evaluate": lambda: evaluate_lazy(instances, da.roll(instances, 1, 2),
                                              instance_input=True, slab=4),
            "attribute": lambda: attribute_lazy("bundled", image, "saliency", target=1,
                                                slab=4),
        }
        found = {}
        for name, job in jobs.items():
            job()  # first call: imports and caches
            with dask.config.set(scheduler="synchronous"):
                tracemalloc.start()
                job()
                found[name] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        return found

    shallow, deep = traced_peaks(64), traced_peaks(256)
    deep_bytes = 256 * 96 * 96 * 4
    for name in ("segment", "evaluate", "attribute"):
        assert deep[name] < 0.3 * deep_bytes, name
        assert deep[name] < 1.5 * shallow[name] + 2**19, name


def test_a_zarr_store_opens_in_napari_as_a_lazy_layer(make_napari_viewer, tmp_path):
    data = np.random.default_rng(5).normal(size=(12, 16, 20)).astype(np.float32)
    write_zarr(tmp_path / "ct.zarr", data, spacing=(2.0, 0.5, 0.5), chunks=(4, 16, 20))
    labels = (data > 1).astype(np.uint8)
    write_zarr(tmp_path / "ct_seg.zarr", labels, spacing=(2.0, 0.5, 0.5), is_label=True)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tmp_path / "ct.zarr"), plugin="napari-xaimed")
    (seg,) = viewer.open(str(tmp_path / "ct_seg.zarr"), plugin="napari-xaimed")
    assert image._type_string == "image" and seg._type_string == "labels"
    assert isinstance(image.data, da.Array) and isinstance(seg.data, da.Array)
    np.testing.assert_allclose(image.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(image.data), data)
    np.testing.assert_array_equal(np.asarray(seg.data), labels)
