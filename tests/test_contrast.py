"""Display contrast (issue 29, item 2): the file's window (a real pydicom-data CT header, an
enhanced CT, NIfTI cal_min/cal_max), CT presets, and percentiles for MR or no header."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from napari.layers import Layer
from pydicom.data import get_testdata_file

from napari_xaimed._errors import XaimedError
from napari_xaimed.io import read_volume
from napari_xaimed.io.contrast import (
    CT_PRESETS,
    default_range,
    dicom_window,
    percentile_range,
    preset_range,
)
from napari_xaimed.viewer.reader import read_volumes
from napari_xaimed.viewer.widgets.display import contrast_for


def _pydicom_data_ct() -> Path:
    """693_UNCI.dcm of pydicom-data: a real 512 x 512 CT slice, window 40/100 in its header."""
    import data_store

    return Path(data_store.__file__).parent / "data" / "693_UNCI.dcm"


def _window(ds) -> tuple[float, float]:
    """The displayed range straight from pydicom: centre -/+ width / 2."""
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    return centre - width / 2, centre + width / 2


def test_a_real_ct_opens_at_its_header_window(tmp_path):
    source = _pydicom_data_ct()
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    shutil.copy(source, tmp_path / "ct.dcm")  # alone: its siblings share its position
    volume = read_volume(tmp_path / "ct.dcm")
    assert volume.modality == ds.Modality == "CT"
    assert volume.display_range == _window(ds) == (-10.0, 90.0)
    assert volume.data.min() < -3000  # the full range a naive display would show
    data, kwargs, _ = read_volumes(str(tmp_path / "ct.dcm"))[0]
    assert kwargs["contrast_limits"] == (-10.0, 90.0)
    assert kwargs["metadata"]["display"]["contrast"] == "file"


def test_an_enhanced_ct_opens_at_its_frame_voi_lut_window():
    path = Path(get_testdata_file("eCT_Supplemental.dcm"))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    lut = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    volume = read_volume(path)
    assert volume.display_range == _window(lut) == (-2.0, 100.0)
    assert volume.modality == "CT"


def test_nifti_cal_min_cal_max(tmp_path):
    data = np.random.default_rng(0).normal(100, 30, size=(8, 9, 10)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["cal_min"], img.header["cal_max"] = 20.0, 180.0
    nib.save(img, str(tmp_path / "t1.nii.gz"))
    assert read_volume(tmp_path / "t1.nii.gz").display_range == (20.0, 180.0)
    _, kwargs, _ = read_volumes(str(tmp_path / "t1.nii.gz"))[0]
    assert kwargs["contrast_limits"] == (20.0, 180.0)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "plain.nii.gz"))  # unset: 0, 0
    assert read_volume(tmp_path / "plain.nii.gz").display_range is None
    _, kwargs, _ = read_volumes(str(tmp_path / "plain.nii.gz"))[0]
    np.testing.assert_allclose(kwargs["contrast_limits"],
                               np.percentile(data, [0.5, 99.5]), rtol=1e-6)


def test_presets_are_the_usual_ct_windows():
    # centre -/+ width / 2, by hand
    assert preset_range("brain") == (0.0, 80.0)
    assert preset_range("soft tissue") == (-160.0, 240.0)
    assert preset_range("lung") == (-1350.0, 150.0)
    assert preset_range("Bone") == (-500.0, 1300.0)
    assert set(CT_PRESETS) == {"brain", "soft tissue", "lung", "bone"}
    with pytest.raises(XaimedError, match="choose one of"):
        preset_range("liver")


def test_default_contrast_by_what_is_known():
    rng = np.random.default_rng(1)
    ct = rng.normal(0, 500, size=(20, 20, 20)).astype(np.int16)
    assert default_range(ct, (-10.0, 90.0), "CT") == ((-10.0, 90.0), "file")
    assert default_range(ct, None, "CT") == ((-160.0, 240.0), "CT soft tissue")
    (low, high), origin = default_range(ct, None, "MR")
    assert origin == "percentiles 0.5-99.5"
    np.testing.assert_allclose((low, high), np.percentile(ct, [0.5, 99.5]))
    assert percentile_range(np.full((3, 3), 7.0)) == (7.0, 8.0)
    assert percentile_range(np.array([np.nan, np.inf])) == (0.0, 1.0)
    assert dicom_window("40\\450", "350\\1500") == (-135.0, 215.0)  # the first of several
    assert dicom_window("", "") is None


def test_the_display_dock_applies_presets_to_an_image(tmp_path):
    shutil.copy(_pydicom_data_ct(), tmp_path / "ct.dcm")
    layer = Layer.create(*read_volumes(str(tmp_path / "ct.dcm"))[0])
    assert contrast_for(layer, "lung") == (-1350.0, 150.0)
    assert contrast_for(layer, "file window") == (-10.0, 90.0)
    np.testing.assert_allclose(contrast_for(layer, "percentiles"),
                               np.percentile(layer.data, [0.5, 99.5]))
    layer.metadata = {}
    with pytest.raises(XaimedError, match="no display window"):
        contrast_for(layer, "file window")


def test_a_large_nifti_read_lazily_keeps_cal_min_cal_max(tmp_path, monkeypatch):
    """A file over the lazy threshold opens at its header's range too, not at percentiles."""
    import napari_xaimed.viewer.reader as _reader
    from napari_xaimed.io import is_lazy

    data = np.random.default_rng(0).normal(100, 30, size=(8, 9, 10)).astype(np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header["cal_min"], img.header["cal_max"] = 20.0, 180.0
    nib.save(img, str(tmp_path / "big.nii"))
    volume = read_volume(tmp_path / "big.nii", lazy=True)
    header = nib.load(str(tmp_path / "big.nii")).header
    assert is_lazy(volume.data)
    assert volume.display_range == (float(header["cal_min"]), float(header["cal_max"]))
    monkeypatch.setattr(_reader, "LAZY_NIFTI_BYTES", 100)  # "larger than memory" here
    (layer_data, kwargs, _), = read_volumes(str(tmp_path / "big.nii"))
    assert is_lazy(layer_data)
    assert kwargs["contrast_limits"] == (20.0, 180.0)
    assert kwargs["metadata"]["display"]["contrast"] == "file"
