"""NRRD, MetaImage and DICOM series against files written by nibabel and SimpleITK directly.

One oblique phantom is written as NIfTI (nibabel, RAS), NRRD and MetaImage (SimpleITK, LPS) and
a DICOM series (SimpleITK's GDCM writer, slice by slice with its own tags); every one must read
back as the same voxels with the same world coordinates.
"""

from __future__ import annotations

import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_xaimed import XaimedError
from napari_xaimed.io import read_volume, write_volume
from napari_xaimed.io.dicom import list_series

FLIP = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
SHAPE = (6, 7, 8)  # (z, y, x)
ZOOMS_XYZ = (0.7, 0.8, 2.5)
STUDY = "1.2.826.0.1.3680043.2.1125.7"


def rotation(deg_z: float, deg_x: float) -> np.ndarray:
    a, b = np.deg2rad(deg_z), np.deg2rad(deg_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def phantom_affine() -> np.ndarray:
    """RAS voxel-to-world: rotated about z and x (a proper rotation, as DICOM requires)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(25, 10) @ np.diag(ZOOMS_XYZ)
    affine[:3, 3] = [90.5, -120.25, 33.0]
    return affine


def phantom() -> np.ndarray:
    """int16 voxels, all different, so any flip or transposition changes the array."""
    z, y, x = np.indices(SHAPE)
    return (100 * z + 10 * y + x - 300).astype(np.int16)


def world(affine: np.ndarray, zyx: tuple[int, int, int]) -> np.ndarray:
    """World (RAS, mm) position of voxel ``[z, y, x]`` of a (z, y, x) array."""
    z, y, x = zyx
    return (affine @ np.array([x, y, z, 1.0]))[:3]


def sitk_image(data: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """A SimpleITK image of the phantom with the LPS geometry of a RAS affine (test-side)."""
    lps = FLIP @ affine_ras[:3]
    zooms = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(zooms.tolist())
    image.SetDirection((lps[:, :3] / zooms).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    return image


def write_dicom_series(folder: Path, data: np.ndarray, affine_ras: np.ndarray, uid: str,
                       description: str = "phantom", skip: tuple[int, ...] = ()) -> None:
    """One DICOM file per z slice, with position, orientation and UIDs set explicitly."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(folder, data, affine_ras, uid, description, skip)
    finally:
        # GDCM's writer switches the whole process to the C locale (subprocesses started with
        # text=True later decode as ASCII): put it back
        locale.setlocale(locale.LC_ALL, saved)


def _write_slices(folder: Path, data: np.ndarray, affine_ras: np.ndarray, uid: str,
                  description: str, skip: tuple[int, ...]) -> None:
    image = sitk_image(data, affine_ras)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[0]):
        if k in skip:
            continue
        plane = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT", "0020|000d": STUDY, "0020|000e": uid,
            "0008|103e": description, "0020|0011": uid.rsplit(".", 1)[-1],
            "0008|0018": f"{uid}.{k + 1}", "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.10f}" for v in position),
            "0020|0037": orientation, "0018|0050": f"{ZOOMS_XYZ[2]:g}",
        }
        for key, value in tags.items():
            plane.SetMetaData(key, value)
        # files named against slice order, so reading must sort by position, not by name
        writer.SetFileName(str(folder / f"IM{data.shape[0] - k:04d}.dcm"))
        writer.Execute(plane)


@pytest.fixture
def formats(tmp_path: Path) -> dict[str, Path]:
    """The phantom as NIfTI (nibabel), NRRD, MHA, MHD (SimpleITK) and a DICOM series."""
    data, affine = phantom(), phantom_affine()
    paths = {"nifti": tmp_path / "p.nii.gz", "nrrd": tmp_path / "p.nrrd",
             "mha": tmp_path / "p.mha", "mhd": tmp_path / "p.mhd", "dicom": tmp_path / "dicom"}
    nib.save(nib.Nifti1Image(np.transpose(data), affine), str(paths["nifti"]))
    for key in ("nrrd", "mha", "mhd"):
        sitk.WriteImage(sitk_image(data, affine), str(paths[key]), True)
    write_dicom_series(paths["dicom"], data, affine, uid=f"{STUDY}.1")
    return paths


VOXELS = [(0, 0, 0), (5, 6, 7), (2, 3, 1), (5, 0, 7), (1, 4, 6)]


def test_one_phantom_in_every_format_reads_the_same(formats):
    data, affine = phantom(), phantom_affine()
    reference = read_volume(formats["nifti"])
    np.testing.assert_array_equal(reference.data, data)
    for key, path in formats.items():
        vol = read_volume(path)
        np.testing.assert_array_equal(vol.data, data, err_msg=key)
        assert vol.data.dtype == np.int16, key
        np.testing.assert_allclose(vol.spacing, (2.5, 0.8, 0.7), rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(vol.affine, affine, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(vol.translate, reference.translate, atol=1e-4, err_msg=key)
        for zyx in VOXELS:
            np.testing.assert_allclose(world(vol.affine, zyx), world(reference.affine, zyx),
                                       atol=1e-4, err_msg=f"{key} {zyx}")
        assert not vol.is_label, key


def test_world_coordinates_agree_with_itk_physical_points(formats):
    """Our RAS world is ITK's own LPS physical point, flipped: checked voxel by voxel."""
    image = sitk.ReadImage(str(formats["nrrd"]))
    vol = read_volume(formats["nrrd"])
    for z, y, x in VOXELS:
        lps = np.asarray(image.TransformIndexToPhysicalPoint((x, y, z)))
        np.testing.assert_allclose(world(vol.affine, (z, y, x)), FLIP @ lps, atol=1e-6)
        assert vol.data[z, y, x] == image[x, y, z]


def test_translate_is_the_origin_along_the_voxel_axes(formats):
    vol = read_volume(formats["mha"])
    axes = vol.affine[:3, :3] / np.linalg.norm(vol.affine[:3, :3], axis=0)
    for zyx in VOXELS:
        in_voxel_frame = (axes.T @ world(vol.affine, zyx))[::-1]  # (z, y, x)
        np.testing.assert_allclose(np.array(vol.translate) + np.array(zyx) * vol.spacing,
                                   in_voxel_frame, atol=1e-6)
    plain = write_volume(formats["nifti"].with_name("plain.nrrd"), phantom(),
                         spacing=(2.0, 1.0, 0.5))[0]
    assert read_volume(plain).translate == pytest.approx((0.0, 0.0, 0.0))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nhdr", ".mhd"])
def test_write_and_read_back_keeps_spacing_origin_direction(tmp_path, suffix):
    data, affine = phantom().astype(np.float32) / 7, phantom_affine()
    written = write_volume(tmp_path / f"out{suffix}", data, (2.5, 0.8, 0.7), affine,
                           metadata={"kind": "heatmap"})
    assert all(p.is_file() for p in written)
    assert written[0] == tmp_path / f"out{suffix}" and written[-1] == tmp_path / "out.json"
    if suffix in (".nhdr", ".mhd"):
        assert len(written) == 3  # header, data file, provenance
    image = sitk.ReadImage(str(written[0]))  # SimpleITK's view of what we wrote
    lps = FLIP @ affine[:3]
    np.testing.assert_allclose(image.GetSpacing(), ZOOMS_XYZ, rtol=1e-9)
    np.testing.assert_allclose(image.GetOrigin(), lps[:, 3], atol=1e-9)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)),
                               lps[:, :3] / ZOOMS_XYZ, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data)
    back = read_volume(written[0])
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, affine, atol=1e-9)
    assert back.metadata == {"kind": "heatmap"}


def test_labels_keep_their_kind_and_dtype(tmp_path):
    labels = np.zeros(SHAPE, np.int64)
    labels[1:3, 2:5, 3:6] = 70000
    for suffix in (".nrrd", ".mha"):
        write_volume(tmp_path / f"organs{suffix}", labels, is_label=True)
        back = read_volume(tmp_path / f"organs{suffix}")
        assert back.is_label and back.data.dtype == np.int64
        np.testing.assert_array_equal(back.data, labels)
    mask = labels > 0
    write_volume(tmp_path / "m.nrrd", mask)
    back = read_volume(tmp_path / "m.nrrd")
    assert back.is_label and back.data.dtype == np.uint8


def test_channel_axis_round_trips(tmp_path):
    data = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)
    write_volume(tmp_path / "two.nrrd", data, spacing=(2.0, 1.0, 1.0))
    back = read_volume(tmp_path / "two.nrrd")
    assert back.data.shape == data.shape
    np.testing.assert_array_equal(back.data, data)


def test_a_dicom_file_reads_its_series(formats):
    one = sorted(formats["dicom"].iterdir())[2]
    np.testing.assert_array_equal(read_volume(one).data, phantom())


def write_two_series(folder: Path) -> tuple[str, str]:
    first, second = f"{STUDY}.1", f"{STUDY}.2"
    write_dicom_series(folder / "a", phantom(), phantom_affine(), uid=first, description="CT")
    write_dicom_series(folder / "b", phantom()[:3, :4, :5], np.diag([1.0, 1.0, 3.0, 1.0]),
                       uid=second, description="scout")
    mixed = folder / "mixed"
    mixed.mkdir()
    for sub in ("a", "b"):
        for path in (folder / sub).iterdir():
            path.rename(mixed / f"{sub}_{path.name}")
    return first, second


def test_a_folder_of_two_series_is_refused_until_one_is_picked(tmp_path):
    first, second = write_two_series(tmp_path)
    folder = tmp_path / "mixed"
    with pytest.raises(XaimedError) as err:
        read_volume(folder)
    message = str(err.value)
    assert "2 DICOM series" in message and "series=" in message
    assert f"{first} (CT, 6 slices)" in message and f"{second} (scout, 3 slices)" in message
    np.testing.assert_array_equal(read_volume(folder, series=first).data, phantom())
    picked = read_volume(folder, series=second)
    np.testing.assert_array_equal(picked.data, phantom()[:3, :4, :5])
    assert picked.spacing == pytest.approx((3.0, 1.0, 1.0))
    with pytest.raises(XaimedError, match="(?s)No series .1.2.3.*" + first.replace(".", r"\.")):
        read_volume(folder, series="1.2.3")
    assert [s.uid for s in list_series(folder)] == [first, second]  # largest first


def test_a_missing_slice_is_refused_by_name(tmp_path):
    folder = tmp_path / "gap"
    write_dicom_series(folder, phantom(), phantom_affine(), uid=f"{STUDY}.3", skip=(3,))
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(XaimedError) as err:
        read_volume(folder)
    message = str(err.value)
    # slices 2 and 4 are files IM0004 and IM0002 (named against slice order)
    assert "IM0004.dcm" in message and "IM0002.dcm" in message
    assert "2.5 mm apart" in message and "5 mm apart" in message
    assert "about 1 slice missing" in message and "complete series" in message
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing touched


def test_duplicate_and_tilted_slices_are_refused(tmp_path):
    folder = tmp_path / "dup"
    write_dicom_series(folder, phantom(), phantom_affine(), uid=f"{STUDY}.4")
    copy = folder / "copy.dcm"
    copy.write_bytes((folder / "IM0003.dcm").read_bytes())
    with pytest.raises(XaimedError, match="same position"):
        read_volume(folder)

    tilted = tmp_path / "tilt"
    affine = phantom_affine()
    affine[:3, 2] += 0.5 * affine[:3, 0] / np.linalg.norm(affine[:3, 0])  # each slice shifted
    write_dicom_series(tilted, phantom(), affine, uid=f"{STUDY}.5")
    with pytest.raises(XaimedError, match="gantry tilt.*resampled to an orthogonal grid"):
        read_volume(tilted)


def sheared_nrrd(path: Path) -> None:
    """An NRRD whose second axis leans 15 degrees towards the first, written by hand."""
    data = phantom()
    lean = np.tan(np.deg2rad(15)) * 0.8
    header = (
        "NRRD0004\n"
        "type: short\n"
        "dimension: 3\n"
        "space: left-posterior-superior\n"
        f"sizes: {SHAPE[2]} {SHAPE[1]} {SHAPE[0]}\n"
        f"space directions: (0.7,0,0) ({lean},0.8,0) (0,0,2.5)\n"
        "kinds: domain domain domain\n"
        "endian: little\n"
        "encoding: raw\n"
        "space origin: (1,2,3)\n\n"
    )
    path.write_bytes(header.encode() + data.astype("<i2").tobytes())


def test_non_orthogonal_nrrd_is_refused(tmp_path):
    path = tmp_path / "sheared.nrrd"
    sheared_nrrd(path)
    assert sitk.ReadImage(str(path)).GetSize() == (8, 7, 6)  # a valid file ITK reads
    with pytest.raises(XaimedError, match="non-orthogonal.*75.00.*resampled to an orthogonal grid"):
        read_volume(path)
    affine = np.eye(4)
    affine[0, 1] = 0.3
    with pytest.raises(XaimedError, match="resampled to an orthogonal grid"):
        write_volume(tmp_path / "out.nrrd", phantom(), affine=affine, metadata={"a": 1})
    assert not (tmp_path / "out.nrrd").exists() and not (tmp_path / "out.json").exists()


def test_bad_files_and_folders_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.nrrd"
    junk.write_bytes(b"not an nrrd")
    with pytest.raises(XaimedError, match="Could not read 'junk.nrrd' as NRRD"):
        read_volume(junk)
    header = tmp_path / "lost.mhd"
    write_volume(header, phantom())
    (tmp_path / "lost.zraw").unlink()
    with pytest.raises(XaimedError, match="data file"):
        read_volume(header)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(XaimedError, match="No DICOM series"):
        read_volume(empty)
    with pytest.raises(XaimedError, match="not DICOM"):
        read_volume(tmp_path / "lost.mhd", series="1.2")
    with pytest.raises(XaimedError, match="NRRD in .nrrd"):
        write_volume(tmp_path / "x.tif", phantom())


# ------------------------------------------------------------------------- napari reader/writer

def test_get_reader_takes_volume_files_and_dicom_folders_only(formats, tmp_path):
    from napari_xaimed.viewer.reader import get_reader

    for key, path in formats.items():
        assert get_reader(str(path)) is not None, key
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert get_reader(str(tmp_path / "notes")) is None
    assert get_reader(str(tmp_path / "notes" / "a.txt")) is None


def test_napari_opens_nrrd_and_dicom_where_nifti_lands(make_napari_viewer, formats):
    viewer = make_napari_viewer()
    layers = {key: viewer.open(str(formats[key]), plugin="napari-xaimed")
              for key in ("nifti", "nrrd", "mha", "dicom")}
    reference = read_volume(formats["nifti"])
    assert reference.translate != pytest.approx((0.0, 0.0, 0.0))  # an origin to get right
    axes = reference.affine[:3, :3] / np.linalg.norm(reference.affine[:3, :3], axis=0)
    for key, opened in layers.items():
        (layer,) = opened
        assert layer._type_string == "image", key
        # napari numbers repeated names: p, p [1], p [2]
        assert layer.name.split(" [")[0] == ("dicom" if key == "dicom" else "p"), key
        np.testing.assert_array_equal(layer.data, phantom(), err_msg=key)
        np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.7), rtol=1e-6, err_msg=key)
        np.testing.assert_allclose(layer.translate, reference.translate, atol=1e-4, err_msg=key)
        assert tuple(layer.axis_labels) == ("z", "y", "x")
        for zyx in VOXELS:  # napari's world = the patient's RAS world, in (S, A, R) order
            np.testing.assert_allclose(layer.data_to_world(zyx),
                                       world(reference.affine, zyx)[::-1],
                                       atol=1e-4, err_msg=f"{key} {zyx}")
        # the voxel axes as the file's direction cosines (layer affine), not turned away
        np.testing.assert_allclose(layer.affine.affine_matrix[:3, :3], axes[::-1, ::-1],
                                   atol=1e-6, err_msg=key)
    assert layers["dicom"][0].metadata["nifti"]["series"] == f"{STUDY}.1"


def test_napari_opens_each_series_of_a_folder_as_a_layer(make_napari_viewer, tmp_path):
    write_two_series(tmp_path)
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "mixed"), plugin="napari-xaimed")
    assert [layer.name for layer in layers] == ["mixed [CT]", "mixed [scout]"]
    np.testing.assert_allclose(layers[1].scale, (3.0, 1.0, 1.0))
    np.testing.assert_array_equal(layers[1].data, phantom()[:3, :4, :5])


def test_a_broken_series_is_reported_and_the_others_open(make_napari_viewer, tmp_path):
    folder = tmp_path / "both"
    write_dicom_series(tmp_path / "good", phantom(), phantom_affine(), uid=f"{STUDY}.1",
                       description="CT")
    write_dicom_series(tmp_path / "gap", phantom(), phantom_affine(), uid=f"{STUDY}.3",
                       description="gappy", skip=(2,))
    folder.mkdir()
    for sub in ("good", "gap"):
        for path in (tmp_path / sub).iterdir():
            path.rename(folder / f"{sub}_{path.name}")
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="Not opened.*gappy.*slice missing"):
        layers = viewer.open(str(folder), plugin="napari-xaimed")
    assert [layer.name for layer in layers] == ["both [CT]"]


def test_a_dcm_file_opens_its_series_named_after_the_folder(make_napari_viewer, formats):
    viewer = make_napari_viewer()
    one = sorted(formats["dicom"].iterdir())[0]
    (layer,) = viewer.open(str(one), plugin="napari-xaimed")
    assert layer.name == "dicom" and layer.data.shape == SHAPE


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_saving_a_dicom_layer_keeps_its_geometry(make_napari_viewer, formats,
                                                          tmp_path, suffix):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(formats["dicom"]), plugin="napari-xaimed")
    out = tmp_path / f"saved{suffix}"
    assert layer.save(str(out), plugin="napari-xaimed")
    back = read_volume(out)
    np.testing.assert_array_equal(back.data, phantom())
    np.testing.assert_allclose(back.affine, phantom_affine(), atol=1e-5)
    layer.translate = np.asarray(layer.translate) + (5.0, 0.0, 0.0)  # moved 5 mm along z
    assert layer.save(str(tmp_path / f"moved{suffix}"), plugin="napari-xaimed")
    moved = read_volume(tmp_path / f"moved{suffix}")
    np.testing.assert_allclose(moved.affine[:3, :3], phantom_affine()[:3, :3], atol=1e-6)
    shift = moved.affine[:3, 3] - phantom_affine()[:3, 3]
    z_axis = phantom_affine()[:3, 2] / ZOOMS_XYZ[2]
    np.testing.assert_allclose(shift, 5.0 * z_axis, atol=1e-5)
