"""The real MNI152 sample (nilearn's template): its grid and tissues, the napari sample, ANTs
tissue classes against nilearn's grey/white matter, and registration to a known deformation."""

import sys

import numpy as np
import pytest

from napari_xaimed import XaimedError, samples
from napari_xaimed.registration import register
from napari_xaimed.segmentation import segment


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def brain2():
    return samples.mni152(2)


def test_mni152_is_nilearns_template_in_zyx_with_its_world_frame(brain2):
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=2)
    xyz = np.asarray(img.get_fdata())
    s = brain2
    assert s.image.shape == xyz.shape[::-1] == (95, 117, 99)
    assert s.spacing == (2.0, 2.0, 2.0) and s.resolution == 2.0
    np.testing.assert_allclose(s.image, np.transpose(xyz), atol=1e-6)
    # voxel (z, y, x) sits at world (x, y, z) = affine @ (x, y, z, 1), the layer's translate
    # is the world position of voxel 0 written (z, y, x)
    np.testing.assert_allclose(s.translate, img.affine[2::-1, 3])
    z, y, x = 40, 60, 50
    world = img.affine @ np.array([x, y, z, 1.0])
    np.testing.assert_allclose(np.array(s.translate) + np.array(s.spacing) * (z, y, x),
                               world[2::-1])
    assert 0.0 <= s.image.min() and 0.95 < s.image.max() <= 1.0  # nilearn scales it to 0-1


def test_tissue_classes_are_the_most_probable_of_nilearns_maps(brain2):
    from nilearn import datasets

    s = brain2
    assert set(np.unique(s.tissue)) == {0, 1, 2, 3}
    assert not s.tissue[~s.brain].any() and s.tissue[s.brain].all()
    gm_p = np.transpose(datasets.load_mni152_gm_template(resolution=2).get_fdata())
    wm_p = np.transpose(datasets.load_mni152_wm_template(resolution=2).get_fdata())
    assert (gm_p[s.gm] >= wm_p[s.gm]).all() and (gm_p[s.gm] >= 1 / 3 - 1e-6).all()
    assert (wm_p[s.wm] > gm_p[s.wm]).all()
    # nilearn's binary masks (probability > 0.2, closed) contain the classes
    gm_mask = np.transpose(datasets.load_mni152_gm_mask(resolution=2).get_fdata()) > 0
    wm_mask = np.transpose(datasets.load_mni152_wm_mask(resolution=2).get_fdata()) > 0
    assert gm_mask[s.gm].mean() > 0.99 and wm_mask[s.wm].mean() > 0.99
    # T1: CSF darker than GM darker than WM
    means = [s.image[s.tissue == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    # about 1.2 l of GM and 0.6 l of WM in 2 mm voxels (8 mm^3 each)
    assert 1.0e6 < s.gm.sum() * 8 < 1.3e6 and 0.5e6 < s.wm.sum() * 8 < 0.75e6


def test_napari_sample_opens_in_mni_coordinates(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "mni152")
    names = [layer.name for layer in viewer.layers]
    assert names == ["MNI152 T1", "MNI152 tissue", "MNI152 GM probability",
                     "MNI152 WM probability"]
    for layer in viewer.layers:
        np.testing.assert_allclose(layer.scale, (2.0, 2.0, 2.0))
        np.testing.assert_allclose(layer.translate, (-72.0, -134.0, -98.0))
        assert tuple(str(u) for u in layer.units) == ("millimeter",) * 3
        assert layer.metadata["xaimed"]["params"]["generator"] == "mni152"
    assert viewer.layers["MNI152 tissue"]._type_string == "labels"
    # MNI (0, 0, 0), at the anterior commissure, lies inside the brain
    tissue = viewer.layers["MNI152 tissue"]
    index = np.round(tissue.world_to_data((0.0, 0.0, 0.0))).astype(int)
    assert tissue.data[tuple(index)] > 0


def test_atropos_finds_nilearns_grey_and_white_matter(brain2):
    s = brain2
    labels = segment(s.image, "atropos", spacing=s.spacing, n_classes=3, mask=s.brain)
    # measured 0.904 and 0.949 (benchmarks/bench_real.py)
    assert dice(labels == 2, s.gm) > 0.88
    assert dice(labels == 3, s.wm) > 0.93


def test_deformed_copy_follows_the_pull_back_convention():
    fine = samples.mni152_deformed(2, seed=3)
    coarse = samples.mni152_deformed(4, seed=3)
    # one seed, one deformation of world space: the 4 mm voxel i is the 2 mm voxel 2i
    np.testing.assert_allclose(coarse.displacement, fine.displacement[::2, ::2, ::2], atol=1e-5)
    size = np.linalg.norm(fine.displacement, axis=-1)[fine.fixed_brain]
    assert 0.5 < size.mean() < 2.5 and size.max() < 5.0
    # fixed(p) = moving(p + u(p)): pulling the moving image through u gives the fixed one
    from scipy import ndimage as ndi

    index = np.indices(fine.moving.shape, dtype=np.float64)
    coords = index + np.moveaxis(fine.displacement, -1, 0) / 2.0
    pulled = ndi.map_coordinates(fine.moving, coords, order=1)
    pushed = ndi.map_coordinates(fine.moving, index - np.moveaxis(fine.displacement, -1, 0) / 2.0,
                                 order=1)
    brain = fine.fixed_brain
    err_pulled = np.abs(pulled - fine.fixed)[brain].mean()
    assert err_pulled < 0.5 * np.abs(fine.moving - fine.fixed)[brain].mean()
    assert err_pulled < 0.5 * np.abs(pushed - fine.fixed)[brain].mean()


def test_syn_recovers_the_known_field_at_4_mm():
    pair = samples.mni152_deformed(4)
    result = register(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                      moving_spacing=pair.spacing, fixed_origin=pair.translate,
                      moving_origin=pair.translate, transform="SyN", iterations=(40, 20, 10),
                      fixed_labels=pair.fixed_tissue, moving_labels=pair.moving_tissue)
    brain = pair.fixed_brain
    error = np.linalg.norm(result.displacement - pair.displacement, axis=-1)[brain]
    size = np.linalg.norm(pair.displacement, axis=-1)[brain]
    flipped = np.linalg.norm(result.displacement + pair.displacement, axis=-1)[brain]
    # measured: error 0.63 / 1.27 mm (mean / p95), field 1.40 / 2.28 mm
    assert error.mean() < 0.6 * size.mean()
    assert np.percentile(error, 95) < 0.7 * np.percentile(size, 95)
    assert error.mean() < 0.4 * flipped.mean()  # the recovered field points the same way
    warped_gm = result.apply((pair.moving_tissue == 2).astype(np.uint8), "label") == 1
    assert dice(warped_gm, pair.fixed_tissue == 2) > dice(pair.moving_tissue == 2,
                                                          pair.fixed_tissue == 2)
    assert result.metrics["folded_voxels"] == 0


def test_missing_nilearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nilearn", None)  # import nilearn raises ImportError
    with pytest.raises(XaimedError, match=r'pip install "napari-xaimed\[real\]"'):
        samples.mni152(2)
    with pytest.raises(XaimedError, match="whole number of mm"):
        samples.mni152(2.5)


def test_outputs_computed_on_the_sample_can_be_rerun():
    from napari_xaimed.cli import rerun as _rerun
    from napari_xaimed.viewer.sample_data import mni152_layers

    for data, kwargs, _ in mni152_layers(4):
        prov = kwargs["metadata"]["xaimed"]
        record = {"name": kwargs["name"], "sample": {"kind": prov["kind"],
                                                     "params": prov["params"]}}
        np.testing.assert_array_equal(_rerun._sample_data(record), data)
