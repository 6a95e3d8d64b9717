"""DICOM files from the wild: single slices, enhanced multi-frame images, DICOM-SEG and folders
of several series, against pydicom's raw header values, SimpleITK and highdicom.

The files are the real test files shipped by pydicom (``MR_small.dcm``, ``CT_small.dcm``) and
pydicom-data (``eCT_Supplemental.dcm``: Enhanced CT of 2 frames; ``liver.dcm``: a SEG of 3
frames; ``emri_small.dcm``: an Enhanced MR whose functional groups were stripped).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from napari_xaimed import XaimedError
from napari_xaimed.io import read_volume
from napari_xaimed.io.dicom import read_all_series

LPS = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS, per coordinate


def copy_to(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(get_testdata_file(name), folder / name)) for name in names]


def expected_geometry(ds: pydicom.Dataset) -> tuple[np.ndarray, list[int], float]:
    """By hand from pydicom's raw values of an enhanced file: the RAS affine (z along the
    slice normal), the frame order along the normal, and the step between frames."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in
                                   shared.PixelMeasuresSequence[0].PixelSpacing)
    positions = np.array([frame.PlanePositionSequence[0].ImagePositionPatient
                          for frame in ds.PerFrameFunctionalGroupsSequence], dtype=float)
    along_row, along_column = orientation[:3], orientation[3:]
    normal = np.cross(along_row, along_column)
    order = [int(i) for i in np.argsort(positions @ normal)]
    step = float(np.diff(np.sort(positions @ normal)).mean()) if len(order) > 1 else 1.0
    affine = np.eye(4)
    affine[:3, 0] = LPS * along_row * column_spacing  # i = column index
    affine[:3, 1] = LPS * along_column * row_spacing  # j = row index
    affine[:3, 2] = LPS * normal * step
    affine[:3, 3] = LPS * positions[order[0]]
    return affine, order, step


# ------------------------------------------------------------------------- single slices

def test_a_single_mr_slice_gets_its_slice_thickness(tmp_path):
    (path,) = copy_to(tmp_path / "mr", "MR_small.dcm")
    ds = pydicom.dcmread(path)
    assert "SpacingBetweenSlices" not in ds and float(ds.SliceThickness) == 0.8
    for source in (path.parent, path):  # the folder, or the file
        vol = read_volume(source)
        assert vol.data.shape == (1, ds.Rows, ds.Columns)
        assert vol.spacing == pytest.approx((0.8, *(float(v) for v in ds.PixelSpacing)))
        np.testing.assert_allclose(vol.affine[:3, 3], LPS * np.array(ds.ImagePositionPatient,
                                                                     dtype=float))
        np.testing.assert_array_equal(vol.data[0], ds.pixel_array)


def test_spacing_between_slices_wins_over_thickness_for_a_single_slice(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.SpacingBetweenSlices = 1.5  # centre to centre, where SliceThickness is 0.8
    (tmp_path / "a").mkdir()
    ds.save_as(tmp_path / "a" / "mr.dcm")
    assert read_volume(tmp_path / "a").spacing[0] == pytest.approx(1.5)

    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ct.SpacingBetweenSlices
    ct.SliceThickness = 2.5
    (tmp_path / "b").mkdir()
    ct.save_as(tmp_path / "b" / "ct.dcm")
    vol = read_volume(tmp_path / "b")
    assert vol.spacing[0] == pytest.approx(2.5)
    # intensities as GDCM gives them (rescale applied), unchanged by the spacing
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b" / "ct.dcm")))
    np.testing.assert_array_equal(vol.data, reference)


# ----------------------------------------------------------------- enhanced multi-frame

def test_enhanced_ct_reads_as_one_volume_sorted_along_the_normal(tmp_path):
    (path,) = copy_to(tmp_path / "ect", "eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    affine, order, step = expected_geometry(ds)
    assert order == [1, 0] and step == pytest.approx(10.0)  # frames stored against the normal
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    hu = (ds.pixel_array.astype(np.float64) * float(transform.RescaleSlope)
          + float(transform.RescaleIntercept))
    for source in (path.parent, path):
        vol = read_volume(source)
        assert vol.data.shape == (2, ds.Rows, ds.Columns) and not vol.is_label
        np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
        assert vol.spacing == pytest.approx((step, 0.388672, 0.388672))
        np.testing.assert_array_equal(vol.data, hu[order])

    # SimpleITK (GDCM) reads this file too: every voxel sits where it has the same value
    image = sitk.ReadImage(str(path))
    theirs = sitk.GetArrayFromImage(image)
    rng = np.random.default_rng(0)
    for z, y, x in zip(rng.integers(0, 2, 50), rng.integers(0, 512, 50),
                       rng.integers(0, 512, 50), strict=True):
        point = (vol.affine @ [x, y, z, 1.0])[:3] * LPS
        i, j, k = image.TransformPhysicalPointToIndex(point.tolist())
        assert theirs[k, j, i] == vol.data[z, y, x]


def test_an_enhanced_file_without_plane_geometry_says_so(tmp_path):
    (path,) = copy_to(tmp_path / "emri", "emri_small.dcm")
    for source in (path.parent, path):
        with pytest.raises(XaimedError) as err:
            read_volume(source)
        message = str(err.value)
        assert "Enhanced MR Image Storage file of 10 frames" in message
        assert "Plane Position Sequence (0020,9113)" in message
        assert "Pixel Measures Sequence" in message and "re-export" in message
        assert "no valid ImagePositionPatient" not in message


def test_two_multiframe_files_of_one_series_are_read_each_on_its_own(tmp_path):
    (path,) = copy_to(tmp_path / "two", "eCT_Supplemental.dcm")
    other = pydicom.dcmread(path)
    other.SOPInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "two" / "second.dcm")
    with pytest.raises(XaimedError, match="Enhanced CT Image Storage file of 2 frames, one of 2 "
                                          "files of its series.*volume of its own"):
        read_volume(tmp_path / "two")
    assert read_volume(tmp_path / "two" / "second.dcm").data.shape == (2, 512, 512)


def test_an_image_not_placed_in_space_says_what_it_is(tmp_path):
    (path,) = copy_to(tmp_path / "sc", "SC_rgb.dcm")
    with pytest.raises(XaimedError, match="Secondary Capture Image Storage file without "
                                          "ImagePositionPatient.*not placed in patient space"):
        read_volume(path)


# ------------------------------------------------------------------------------ DICOM-SEG

def test_dicom_seg_reads_as_a_label_map_with_segment_names(tmp_path):
    (path,) = copy_to(tmp_path / "seg", "liver.dcm")
    ds = pydicom.dcmread(path)
    affine, order, step = expected_geometry(ds)
    # by hand: frame f holds segment ReferencedSegmentNumber where its pixels are 1
    frames = ds.pixel_array
    expected = np.zeros(frames.shape, np.uint8)
    for f, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        expected[order.index(f)][frames[f] > 0] = number
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    assert names == {1: "Liver"} and step == pytest.approx(1.0)

    vol = read_volume(path)
    assert vol.is_label and vol.label_names == names
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(vol.data, expected)
    assert int(vol.data.sum()) > 1000  # a real liver outline, not an empty map

    # highdicom's own geometry: each voxel's world point holds the same label there
    theirs = hd.seg.segread(str(path)).get_volume(combine_segments=True)
    rng = np.random.default_rng(1)
    inside = np.argwhere(vol.data > 0)[rng.integers(0, int((vol.data > 0).sum()), 30)]
    for z, y, x in [*inside, (0, 0, 0), (2, 511, 511)]:
        point = (vol.affine @ [x, y, z, 1.0])[:3] * LPS
        index = np.round(theirs.map_reference_to_indices(point[np.newaxis])[0]).astype(int)
        assert theirs.array[tuple(index)] == vol.data[z, y, x]


# -------------------------------------------------------------- folders of several series

SERIES = ("CT_small.dcm", "MR_small.dcm", "eCT_Supplemental.dcm", "liver.dcm")


def test_a_folder_of_several_series_lists_them_and_reads_each(tmp_path):
    copy_to(tmp_path / "mixed", *SERIES)
    uids = {name: str(pydicom.dcmread(get_testdata_file(name)).SeriesInstanceUID)
            for name in SERIES}
    with pytest.raises(XaimedError) as err:
        read_volume(tmp_path / "mixed")
    message = str(err.value)
    assert "holds 4 DICOM series" in message and "series=<SeriesNumber>" in message
    assert f"MR series 1: {uids['MR_small.dcm']} (no description, 1 slice)" in message
    assert f"SEG series 1: {uids['liver.dcm']} (Liver Segmentation, 3 frames)" in message
    # by SeriesNumber when it is unique (the Enhanced CT is series 3), else by UID
    assert read_volume(tmp_path / "mixed", series=3).spacing[0] == pytest.approx(10.0)
    with pytest.raises(XaimedError, match="3 series of .* have SeriesNumber 1"):
        read_volume(tmp_path / "mixed", series="1")
    picked = read_volume(tmp_path / "mixed", series=uids["MR_small.dcm"])
    assert picked.spacing[0] == pytest.approx(0.8)

    read = dict((s.uid, v) for s, v in read_all_series(tmp_path / "mixed"))
    assert not any(isinstance(v, XaimedError) for v in read.values())
    assert read[uids["liver.dcm"]].label_names == {1: "Liver"}
    assert read[uids["CT_small.dcm"]].data.shape == (1, 128, 128)


def test_napari_opens_every_series_of_a_folder(make_napari_viewer, tmp_path):
    copy_to(tmp_path / "mixed", *SERIES)
    viewer = make_napari_viewer()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Not opened")
        layers = viewer.open(str(tmp_path / "mixed"), plugin="napari-xaimed")
    by_name = {layer.name: layer for layer in layers}
    assert sorted(by_name) == ["mixed [Liver Segmentation]", "mixed [series 1 (CT)]",
                               "mixed [series 1 (MR)]", "mixed [series 3]"]
    seg = by_name["mixed [Liver Segmentation]"]
    assert seg._type_string == "labels"
    assert seg.metadata["segments"] == {1: "Liver"}
    assert list(seg.features["name"]) == ["background", "Liver"]
    assert list(seg.features["index"]) == [0, 1]
    np.testing.assert_allclose(by_name["mixed [series 1 (MR)]"].scale, (0.8, 0.3125, 0.3125))
    np.testing.assert_allclose(by_name["mixed [series 3]"].scale, (10.0, 0.388672, 0.388672))

    (alone,) = viewer.open(str(tmp_path / "mixed" / "liver.dcm"), plugin="napari-xaimed")
    assert alone.name == "liver" and alone._type_string == "labels"
