"""The plugin in a real napari viewer (under Xvfb): reader, writer, samples, docked widgets."""

import numpy as np
import pytest

from napari_xaimed.io import read_volume, write_volume

WIDGETS = ["Segmentation", "Panoptic evaluation", "Registration", "Attribution",
           "Explanation check", "Cases and latent space",
           "Longitudinal explanation"]


def test_napari_opens_nifti_with_spacing_as_scale(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    write_volume(tmp_path / "scan.nii.gz", image, spacing=(2.5, 0.8, 0.7))
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[2:4, 3:5, 1:6] = 2
    write_volume(tmp_path / "scan_seg.nii.gz", labels, spacing=(2.5, 0.8, 0.7))
    layers = viewer.open(str(tmp_path / "scan.nii.gz"), plugin="napari-xaimed")
    (layer,) = layers
    assert layer.name == "scan" and layer._type_string == "image"
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.7))
    np.testing.assert_array_equal(layer.data, image)
    (seg,) = viewer.open(str(tmp_path / "scan_seg.nii.gz"), plugin="napari-xaimed")
    assert seg._type_string == "labels"
    np.testing.assert_allclose(seg.scale, (2.5, 0.8, 0.7))


def test_four_d_nifti_opens_with_extra_axis_first(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.random.default_rng(1).normal(size=(3, 4, 5, 6)).astype(np.float32)
    write_volume(tmp_path / "series.nii.gz", data, spacing=(2.0, 1.0, 1.0))
    (layer,) = viewer.open(str(tmp_path / "series.nii.gz"), plugin="napari-xaimed")
    assert layer.data.shape == (3, 4, 5, 6)
    np.testing.assert_allclose(layer.scale, (1.0, 2.0, 1.0, 1.0))


def test_saving_layers_writes_nifti_with_provenance(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    ct, truth = viewer.layers["lesion ct"], viewer.layers["lesion truth"]
    ct.scale = (2.0, 1.0, 0.5)
    assert ct.save(str(tmp_path / "ct.nii.gz"), plugin="napari-xaimed")
    assert truth.save(str(tmp_path / "truth.nii.gz"), plugin="napari-xaimed")
    back = read_volume(tmp_path / "ct.nii.gz")
    assert back.spacing == pytest.approx((2.0, 1.0, 0.5))
    assert not back.is_label
    assert back.metadata["params"]["generator"] == "lesion_volume"
    np.testing.assert_array_equal(back.data, ct.data)
    written = read_volume(tmp_path / "truth.nii.gz")
    assert written.is_label and (tmp_path / "truth.json").is_file()
    np.testing.assert_array_equal(written.data, truth.data)


def test_reopened_file_keeps_its_orientation(make_napari_viewer, tmp_path):
    import nibabel as nib

    affine = np.array([[0, 0, 2.5, 10.0], [0, -0.8, 0, 20.0], [-0.7, 0, 0, 30.0], [0, 0, 0, 1]])
    xyz = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(xyz, affine), str(tmp_path / "oblique.nii.gz"))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "oblique.nii.gz"), plugin="napari-xaimed")
    # the file's voxel axes (i, j, k) run along -S, -A, +R: the layer shows them permuted to
    # (S, A, R) order (a view), each voxel at the file's world position (S, A, R)
    np.testing.assert_allclose(layer.scale, (0.7, 0.8, 2.5))
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        ras = affine @ np.array([*ijk, 1.0])
        (where,) = np.argwhere(layer.data == xyz[ijk])
        np.testing.assert_allclose(layer.data_to_world(where), ras[2::-1], atol=1e-5)
    layer.save(str(tmp_path / "again.nii.gz"), plugin="napari-xaimed")
    again = nib.load(str(tmp_path / "again.nii.gz"))
    np.testing.assert_allclose(again.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(again.dataobj), xyz)


@pytest.mark.parametrize("key", ["lesion", "longitudinal", "panoptic"])
def test_sample_data_opens_in_world_coordinates(make_napari_viewer, key):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", key)
    assert len(viewer.layers) >= 2
    for layer in viewer.layers:
        assert layer.ndim == 3
        assert tuple(str(u) for u in layer.units) == ("millimeter",) * 3
        assert tuple(layer.axis_labels) == ("z", "y", "x")
        assert "xaimed" in layer.metadata
    if key == "longitudinal":
        np.testing.assert_allclose(viewer.layers["current"].scale, (1.5, 1.0, 1.0))


@pytest.mark.parametrize("name", WIDGETS)
def test_each_widget_docks_and_lists_its_layer_types(make_napari_viewer, name):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    viewer.open_sample("napari-xaimed", "lesion")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-xaimed", name)
    assert dock.widget() is widget or widget in dock.findChildren(type(widget))
    assert any(w is widget for w in viewer.window.dock_widgets.values())
    pickers = [w for w in widget.form if hasattr(w, "choices") and w.label in
               ("image", "reference", "prediction", "fixed", "moving", "prior", "current")]
    assert pickers
    for picker in pickers:
        kinds = {layer._type_string for layer in picker.choices}
        expected = "labels" if picker.label in ("reference", "prediction") else "image"
        assert kinds == {expected}
    # the lists follow the layer list
    before = len(pickers[0].choices)
    if pickers[0].label in ("reference", "prediction"):
        viewer.add_labels(np.zeros((4, 4, 4), np.uint8), name="new")
    else:
        viewer.add_image(np.zeros((4, 4, 4)), name="new")
    assert len(pickers[0].choices) == before + 1
