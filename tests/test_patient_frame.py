"""Layers in patient coordinates (issue 29, item 1), without a canvas: napari's ``data_to_world``
of a layer read from a file equals the file's own affine (nibabel), for an oblique scan and for
a scan stored with permuted axes; outputs take their source's orientation, are saved with it,
and a rerun finds the file's voxels again."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from _oblique import oblique_affine, write_nifti
from napari.components import ViewerModel
from napari.layers import Layer

from napari_xaimed._core.provenance import layer_input, provenance
from napari_xaimed.cli.rerun_inputs import resolve_input
from napari_xaimed.viewer.layers import add_or_update, labels_layer, source_geometry
from napari_xaimed.viewer.reader import read_volumes
from napari_xaimed.viewer.writer import write_labels

# voxel axes (i, j, k) along -S, -A, +R (a sagittal-like storage), tilted 20 degrees about R
_C, _S = np.cos(np.deg2rad(20.0)), np.sin(np.deg2rad(20.0))
PERMUTED = np.array([[0.0, 0.0, 2.5, 10.0], [0.8 * _S, -0.8 * _C, 0.0, 20.0],
                     [-0.7 * _C, -0.7 * _S, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]])


def _file(tmp_path, affine):
    xyz = np.random.default_rng(3).normal(size=(5, 6, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(xyz, affine), str(tmp_path / "scan.nii.gz"))
    return tmp_path / "scan.nii.gz", xyz


@pytest.mark.parametrize("affine", [oblique_affine(), PERMUTED], ids=["oblique", "permuted"])
def test_world_coordinates_are_the_files_affine(tmp_path, affine):
    path, xyz = _file(tmp_path, affine)
    layer = Layer.create(*read_volumes(str(path))[0])
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2), (2, 0, 5)]:
        ras = affine @ np.array([*ijk, 1.0])
        (where,) = np.argwhere(layer.data == xyz[ijk])
        np.testing.assert_allclose(layer.data_to_world(where), ras[2::-1], atol=1e-5)


def test_outputs_take_the_orientation_of_their_source(tmp_path):
    path = write_nifti(tmp_path / "oblique.nii.gz")
    viewer = ViewerModel()
    source = viewer.add_layer(Layer.create(*read_volumes(str(path))[0]))
    spacing, translate = source_geometry(source)
    mask = (np.asarray(source.data) > 900).astype(np.uint8)  # the anterior marker
    out = add_or_update(viewer, labels_layer(
        mask, "marker [oblique]", spacing, translate=translate,
        provenance=provenance("segmentation", sources=[source.name])))
    kji = np.argwhere(mask)[0]
    np.testing.assert_allclose(out.data_to_world(kji), source.data_to_world(kji))
    ras = oblique_affine() @ np.array([kji[2], kji[1], kji[0], 1.0])
    np.testing.assert_allclose(out.data_to_world(kji), ras[2::-1], atol=1e-5)
    # an output on another grid of the scan (the segmentation preview: one slice, its
    # translate moved along the first voxel axis) takes the same rotation and lands on it
    z = 3
    offset = tuple(t + (z * spacing[0] if axis == 0 else 0.0) for axis, t in enumerate(translate))
    preview = add_or_update(viewer, labels_layer(
        mask[z:z + 1], "preview [oblique]", spacing, translate=offset,
        provenance=provenance("segmentation preview", sources=[source.name])))
    for y, x in [(0, 0), (5, 7), (int(kji[1]), int(kji[2]))]:
        np.testing.assert_allclose(preview.data_to_world((0, y, x)),
                                   source.data_to_world((z, y, x)), atol=1e-6)
    # a downsampled copy (twice the spacing, the same corner)
    coarse = add_or_update(viewer, labels_layer(
        mask[::2, ::2, ::2], "coarse [oblique]", tuple(2 * s for s in spacing),
        translate=translate, provenance=provenance("segmentation", sources=[source.name])))
    np.testing.assert_allclose(coarse.data_to_world((1, 2, 3)),
                               source.data_to_world((2, 4, 6)), atol=1e-6)
    # saved, the output lands where the source's file puts those voxels
    written = write_labels(str(tmp_path / "marker.nii.gz"), out.data,
                           {**out._get_state(), "name": out.name})
    np.testing.assert_allclose(nib.load(written[0]).affine, oblique_affine(), atol=1e-4)


def test_a_rerun_reads_a_permuted_file_in_the_layers_order(tmp_path):
    path, xyz = _file(tmp_path, PERMUTED)
    layer = Layer.create(*read_volumes(str(path))[0])
    assert layer.data.shape == (5, 6, 7)  # the file's (z, y, x) = (7, 6, 5), permuted
    record = layer_input(layer)
    assert record["shape"] == [7, 6, 5]  # the digest is of the file's voxels
    again = resolve_input("image", record)
    np.testing.assert_array_equal(again.data, layer.data)
    np.testing.assert_allclose(again.spacing, layer.scale)
