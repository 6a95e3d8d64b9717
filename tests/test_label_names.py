"""Label names from a NIfTI's sidecar, a DICOM-SEG's segments and nnU-Net's dataset.json
(issue 29 item 5), against the names written by hand into each file."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from napari_xaimed import XaimedError
from napari_xaimed.io import read_label_names, read_volume
from napari_xaimed.io.label_names import labels_sidecar_path, nnunet_label_names

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def write_labels(path, values=(0, 1, 2)):
    data = np.zeros((4, 5, 6), np.uint8)
    for i, v in enumerate(values):
        data[i] = v
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_sidecar_beside_a_nifti_names_its_values(tmp_path):
    path = write_labels(tmp_path / "liver.nii.gz")
    sidecar = tmp_path / "liver.labels.json"
    assert labels_sidecar_path(path) == sidecar
    sidecar.write_text(json.dumps({"0": "background", "1": "liver",
                                   "2": {"name": "tumour", "color": "#ff0000"}}))
    assert read_label_names(path) == {1: "liver", 2: "tumour"}
    assert read_label_names(sidecar) == {1: "liver", 2: "tumour"}
    volume = read_volume(path)
    assert volume.is_label and volume.label_names == {1: "liver", 2: "tumour"}
    lazy = read_volume(path, lazy=True)  # a NIfTI larger than memory is named alike
    assert lazy.is_label and lazy.label_names == {1: "liver", 2: "tumour"}


def test_no_sidecar_means_no_names(tmp_path):
    path = write_labels(tmp_path / "plain.nii")
    assert read_label_names(path) == {}
    assert read_volume(path).label_names == {}


@pytest.mark.parametrize("content, fix", [
    ('{"1": "liver",', "not valid JSON"),
    ('["liver"]', "JSON object from label value to name"),
    ('{"one": "liver"}', "not a label value"),
    ('{"1": 3}', "no name"),
])
def test_a_bad_sidecar_says_what_is_wrong(tmp_path, content, fix):
    path = write_labels(tmp_path / "bad.nii.gz")
    (tmp_path / "bad.labels.json").write_text(content)
    with pytest.raises(XaimedError, match=fix):
        read_label_names(path)


def small_seg(path, segments):
    """A DICOM-SEG header built with pydicom: its SegmentSequence and nothing more."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SEG_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SEG_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SEG"
    items = []
    for number, label in segments:
        item = Dataset()
        item.SegmentNumber = number
        if label is not None:
            item.SegmentLabel = label
        item.SegmentAlgorithmType = "MANUAL"
        items.append(item)
    ds.SegmentSequence = Sequence(items)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_seg_segment_names(tmp_path):
    path = small_seg(tmp_path / "seg.dcm", [(1, "Liver"), (2, "Tumour"), (3, None)])
    assert read_label_names(path) == {1: "Liver", 2: "Tumour", 3: "segment 3"}
    # pydicom-data's real SEG: one segment, "Liver" (as its header says)
    real = get_testdata_file("liver.dcm")
    expected = {int(s.SegmentNumber): str(s.SegmentLabel)
                for s in pydicom.dcmread(real).SegmentSequence}
    assert read_label_names(real) == expected == {1: "Liver"}


def test_a_dicom_without_segments_is_refused(tmp_path):
    with pytest.raises(XaimedError, match="not a DICOM-SEG"):
        read_label_names(get_testdata_file("CT_small.dcm"))


def test_nnunet_dataset_json_labels(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
         "numTraining": 1, "file_ending": ".nii.gz"}))
    assert read_label_names(tmp_path) == {1: "liver", 2: "tumour"}
    assert read_label_names(tmp_path / "dataset.json") == {1: "liver", 2: "tumour"}
    # BraTS-style regions: nnU-Net writes region k as regions_class_order[k]
    regions = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                          "enhancing tumor": [3]}, "regions_class_order": [1, 2, 3]}
    assert nnunet_label_names(regions) == {1: "whole tumor", 2: "tumor core",
                                           3: "enhancing tumor"}
    with pytest.raises(XaimedError, match="regions_class_order"):
        nnunet_label_names({"labels": {"background": 0, "whole tumor": [1, 2]}})
    with pytest.raises(XaimedError, match='no "labels"'):
        nnunet_label_names({"channel_names": {}})


def test_saving_a_named_labels_layer_writes_its_sidecar(make_napari_viewer, tmp_path):
    """napari's File > Save of a Labels layer with names: the sidecar beside the file holds
    them in the format above, and read_volume names the values again."""
    viewer = make_napari_viewer()
    data = np.zeros((4, 5, 6), np.uint8)
    data[1], data[2] = 1, 2
    layer = viewer.add_labels(data, name="organs", features={
        "index": [0, 1, 2], "name": ["background", "liver", "tumour"]})
    out = tmp_path / "organs.nii.gz"
    assert layer.save(str(out), plugin="napari-xaimed")
    sidecar = tmp_path / "organs.labels.json"
    assert json.loads(sidecar.read_text()) == {"1": "liver", "2": "tumour"}
    back = read_volume(out)
    assert back.is_label and back.label_names == {1: "liver", 2: "tumour"}
    np.testing.assert_array_equal(back.data, data)
    # names kept only in metadata (a DICOM-SEG's segments, as the reader keeps them)
    from napari_xaimed.viewer.writer import write_labels

    written = write_labels(str(tmp_path / "seg.nrrd"), data,
                           {"metadata": {"segments": {"1": "liver", "2": "tumour"}}})
    assert str(tmp_path / "seg.labels.json") in written
    assert read_volume(tmp_path / "seg.nrrd").label_names == {1: "liver", 2: "tumour"}
    # a layer without names gets no sidecar
    plain = viewer.add_labels(data, name="plain")
    assert plain.save(str(tmp_path / "plain.nii.gz"), plugin="napari-xaimed")
    assert not (tmp_path / "plain.labels.json").exists()
