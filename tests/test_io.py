"""NIfTI I/O against files written and read by nibabel directly."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from napari_xaimed import XaimedError
from napari_xaimed.io import read_volume, sidecar_path, write_volume


def oblique_affine(zooms_xyz):
    """A non-identity orientation: a rotation about z, a flipped x axis and an origin."""
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    flip = np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rot @ flip @ np.diag(zooms_xyz)
    affine[:3, 3] = [90.5, -120.25, 33.0]
    return affine


@pytest.fixture
def nibabel_file(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(7, 9, 5)).astype(np.float32)  # (x, y, z) as NIfTI stores it
    affine = oblique_affine([0.7, 0.8, 2.5])
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(xyz, affine), str(path))
    return path, xyz, affine


def test_read_converts_to_zyx_with_spacing_and_affine(nibabel_file):
    path, xyz, affine = nibabel_file
    vol = read_volume(path)
    assert vol.data.shape == (5, 9, 7)
    # voxel (x=1, y=2, z=3) of the file is [z, y, x] = [3, 2, 1] here
    assert vol.data[3, 2, 1] == xyz[1, 2, 3]
    np.testing.assert_array_equal(vol.data, np.transpose(xyz, (2, 1, 0)))
    np.testing.assert_allclose(vol.spacing, (2.5, 0.8, 0.7), rtol=1e-6)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.is_label is False


def test_round_trip_keeps_voxels_spacing_affine(nibabel_file, tmp_path):
    path, xyz, affine = nibabel_file
    vol = read_volume(path)
    out = tmp_path / "copy.nii"
    write_volume(out, vol.data, vol.spacing, vol.affine)
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), xyz)
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_allclose(back.header.get_zooms()[:3], (0.7, 0.8, 2.5), rtol=1e-6)
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, vol.data)
    assert again.spacing == pytest.approx(vol.spacing)


def test_write_without_affine_uses_spacing(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / "ct.nii.gz"
    write_volume(path, data, spacing=(3.0, 0.5, 0.25))
    img = nib.load(str(path))
    assert img.shape == (6, 5, 4)
    np.testing.assert_allclose(img.header.get_zooms(), (0.25, 0.5, 3.0))
    assert read_volume(path).spacing == pytest.approx((3.0, 0.5, 0.25))


def test_spacing_that_contradicts_affine_is_refused(tmp_path, nibabel_file):
    _, _, affine = nibabel_file
    with pytest.raises(XaimedError, match="disagrees with the affine"):
        write_volume(tmp_path / "x.nii.gz", np.zeros((5, 9, 7)), (1.0, 1.0, 1.0), affine)


def test_four_d_file_puts_extra_axis_first(tmp_path):
    xyzt = np.random.default_rng(1).normal(size=(6, 5, 4, 3)).astype(np.float32)
    path = tmp_path / "dwi.nii.gz"
    nib.save(nib.Nifti1Image(xyzt, np.diag([1.0, 1.5, 2.0, 1.0])), str(path))
    vol = read_volume(path)
    assert vol.data.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(vol.data[2], np.transpose(xyzt[..., 2]))
    assert vol.spacing == pytest.approx((2.0, 1.5, 1.0))
    out = tmp_path / "dwi_copy.nii.gz"
    write_volume(out, vol.data, vol.spacing, vol.affine)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(out)).dataobj), xyzt)


def test_label_detection(tmp_path):
    ct = np.random.default_rng(2).integers(-1024, 2000, size=(6, 7, 8)).astype(np.int16)
    write_volume(tmp_path / "ct.nii.gz", ct)
    assert not read_volume(tmp_path / "ct.nii.gz").is_label

    mask = np.zeros((6, 7, 8), np.uint8)
    mask[2:4, 2:5, 3:6] = 3
    nib.save(nib.Nifti1Image(np.transpose(mask), np.eye(4)), str(tmp_path / "organs.nii.gz"))
    assert read_volume(tmp_path / "organs.nii.gz").is_label  # mostly zero, few classes

    intensities = np.random.default_rng(3).integers(0, 255, size=(6, 7, 8)).astype(np.uint8)
    nib.save(nib.Nifti1Image(intensities, np.eye(4)), str(tmp_path / "mr.nii.gz"))
    assert not read_volume(tmp_path / "mr.nii.gz").is_label
    nib.save(nib.Nifti1Image(intensities, np.eye(4)), str(tmp_path / "case_seg.nii.gz"))
    assert read_volume(tmp_path / "case_seg.nii.gz").is_label  # the name says so

    write_volume(tmp_path / "written.nii.gz", intensities, is_label=True)
    assert read_volume(tmp_path / "written.nii.gz").is_label  # NIfTI intent "label"


def test_dtypes_nifti_readers_accept(tmp_path):
    labels = np.zeros((4, 4, 4), np.int64)
    labels[1, 1, 1] = 70000
    write_volume(tmp_path / "big.nii.gz", labels)
    back = read_volume(tmp_path / "big.nii.gz")
    assert back.data.dtype == np.int32 and back.data[1, 1, 1] == 70000
    write_volume(tmp_path / "mask.nii.gz", labels > 0)
    back = read_volume(tmp_path / "mask.nii.gz")
    assert back.data.dtype == np.uint8 and back.is_label


def test_sidecar_json(tmp_path):
    meta = {"kind": "heatmap", "params": {"steps": np.int64(32)}, "spacing": np.array([1.0, 2.0])}
    written = write_volume(tmp_path / "ig.nii.gz", np.zeros((3, 3, 3), np.float32), metadata=meta)
    assert written == [tmp_path / "ig.nii.gz", tmp_path / "ig.json"]
    assert sidecar_path(tmp_path / "ig.nii.gz") == tmp_path / "ig.json"
    vol = read_volume(tmp_path / "ig.nii.gz")
    assert vol.metadata == {"kind": "heatmap", "params": {"steps": 32}, "spacing": [1.0, 2.0]}


def test_broken_inputs_give_clear_errors(tmp_path, nibabel_file):
    path, _, _ = nibabel_file
    truncated = tmp_path / "truncated.nii.gz"
    raw = gzip.decompress(path.read_bytes())
    truncated.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(XaimedError, match="truncated"):
        read_volume(truncated)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti at all")
    with pytest.raises(XaimedError, match="Could not read"):
        read_volume(junk)
    with pytest.raises(XaimedError, match="No file"):
        read_volume(tmp_path / "missing.nii.gz")
    with pytest.raises(XaimedError, match="not a NIfTI"):
        read_volume(tmp_path / "scan.png")
    with pytest.raises(XaimedError, match="3D"):
        write_volume(tmp_path / "flat.nii.gz", np.zeros((4, 4)))
    with pytest.raises(XaimedError, match=".nii"):
        write_volume(tmp_path / "x.tif", np.zeros((4, 4, 4)))


# --------------------------------------------------------------------- NIfTI spatial units

UNIT_MM = {"micron": 1e-3, "meter": 1e3}


def file_in_units(path, unit, zooms_xyz, origin):
    """A NIfTI written by nibabel whose pixdim and origin are in ``unit`` (by hand)."""
    xyz = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([*zooms_xyz, 1.0])
    affine[:3, 3] = origin
    img = nib.Nifti1Image(xyz, affine)
    img.header.set_xyzt_units(xyz=unit)
    nib.save(img, str(path))
    return xyz


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize(("unit", "zooms", "origin"), [
    ("micron", (500.0, 250.0, 2000.0), (1000.0, -2500.0, 30000.0)),
    ("meter", (0.0005, 0.00025, 0.002), (0.001, -0.0025, 0.03)),
])
def test_micron_and_meter_files_read_in_mm(tmp_path, unit, zooms, origin, lazy):
    import SimpleITK as sitk

    path = tmp_path / f"{unit}.nii"
    xyz = file_in_units(path, unit, zooms, origin)
    vol = read_volume(path, lazy=lazy)
    # hand: 500 um = 0.5 mm, 0.0005 m = 0.5 mm; (z, y, x) order
    assert vol.spacing == pytest.approx((2.0, 0.25, 0.5))
    np.testing.assert_allclose(vol.affine[:3, 3], (1.0, -2.5, 30.0))
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([0.5, 0.25, 2.0]))
    np.testing.assert_array_equal(np.asarray(vol.data), np.transpose(xyz))
    # SimpleITK's NIfTI reader converts to mm too (origin in LPS)
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetSpacing(), vol.spacing[::-1])
    np.testing.assert_allclose(image.GetOrigin(), vol.affine[:3, 3] * (-1, -1, 1))


def test_unknown_units_stay_mm_and_writing_says_mm(tmp_path):
    path = tmp_path / "unknown.nii"
    file_in_units(path, "unknown", (0.5, 0.25, 2.0), (1.0, 2.0, 3.0))
    vol = read_volume(path)
    assert vol.spacing == pytest.approx((2.0, 0.25, 0.5))
    np.testing.assert_allclose(vol.affine[:3, 3], (1.0, 2.0, 3.0))

    micron = tmp_path / "micron.nii"
    file_in_units(micron, "micron", (500.0, 250.0, 2000.0), (1000.0, 2000.0, 3000.0))
    out = tmp_path / "copy.nii.gz"
    write_volume(out, *(lambda v: (v.data, v.spacing, v.affine))(read_volume(micron)))
    back = nib.load(str(out))
    assert back.header.get_xyzt_units()[0] == "mm"
    np.testing.assert_allclose(back.header.get_zooms(), (0.5, 0.25, 2.0))
    np.testing.assert_allclose(back.affine[:3, 3], (1.0, 2.0, 3.0))
    written = tmp_path / "fresh.nii.gz"
    write_volume(written, np.zeros((2, 3, 4)), spacing=(1.0, 1.0, 1.0))
    assert nib.load(str(written)).header.get_xyzt_units()[0] == "mm"
