"""Enhanced multi-frame DICOM images and DICOM-SEG segmentations, through highdicom.

An enhanced image (Enhanced CT, Enhanced MR, Enhanced PET, their Legacy Converted forms...) is
one file holding a whole volume: its frames are placed by the Per-frame and Shared Functional
Groups (Plane Position, Plane Orientation, Pixel Measures), not by the top-level
ImagePositionPatient of a classic slice. :func:`read_enhanced` builds the volume with
highdicom's :meth:`highdicom.Image.get_volume`, which sorts the frames along the slice normal
and refuses frames that do not form one regular grid (several stacks, echoes or time points, a
missing frame). The modality rescale (slope, intercept) is applied, as for a classic series;
palettes, VOI windows and presentation LUTs are not (they are for display).

A DICOM-SEG (:func:`read_segmentation`) becomes a label map whose values are the segment
numbers (0 is background), on the segmentation's own grid; the segment names (SegmentLabel)
are kept in :attr:`~napari_xaimed.io.Volume.label_names`. Frames a SEG omits (no segment there)
are background.

Geometry follows :mod:`napari_xaimed.io`: data ``(z, y, x)`` with z along the slice normal
(row direction x column direction), spacing in mm, and the RAS affine in NIfTI convention
(converted from DICOM's LPS).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

if TYPE_CHECKING:
    import highdicom as hd

    from napari_xaimed.io.volume import Volume

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
# Plane geometry an enhanced file needs, by the functional group that holds it.
_GEOMETRY_GROUPS = {
    "PlanePositionSequence": "Plane Position Sequence (0020,9113)",
    "PlaneOrientationSequence": "Plane Orientation Sequence (0020,9116)",
    "PixelMeasuresSequence": "Pixel Measures Sequence (0028,9110) with PixelSpacing",
}


def read_header(path: Path) -> Any | None:
    """The dataset of a DICOM file without its pixels (pydicom), None if pydicom cannot parse
    it (GDCM then gets its turn)."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - pydicom raises many types; GDCM reports the problem
        return None


def is_segmentation(ds: Any) -> bool:
    """Whether a dataset is a DICOM Segmentation (SEG or Label Map SEG)."""
    return str(getattr(ds, "SOPClassUID", "")) in SEG_SOP_CLASSES or (
        getattr(ds, "Modality", "") == "SEG")


def is_enhanced(ds: Any) -> bool:
    """Whether a dataset is an enhanced multi-frame image: frames placed by functional groups
    (or of an enhanced SOP class, whose groups may have been stripped)."""
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        return True
    kind = str(getattr(getattr(ds, "SOPClassUID", None), "name", ""))
    return "Enhanced" in kind and ("Image" in kind or "Volume" in kind)


def describe(ds: Any) -> str:
    """``"an Enhanced MR Image Storage file of 10 frames"`` for messages."""
    uid = getattr(ds, "SOPClassUID", None)
    kind = getattr(uid, "name", None) or str(uid or "DICOM")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    article = "an" if kind[:1].upper() in "AEIOU" else "a"
    return f"{article} {kind} file" + (f" of {frames} frames" if frames > 1 else "")


def missing_geometry(ds: Any) -> list[str]:
    """The plane geometry an enhanced file lacks, by name (empty when it is all there)."""
    shared = ds.get("SharedFunctionalGroupsSequence") or [{}]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    missing = []
    for keyword, name in _GEOMETRY_GROUPS.items():
        in_shared = keyword in shared[0]
        in_frames = bool(per_frame) and all(keyword in frame for frame in per_frame)
        if not (in_shared or in_frames):
            missing.append(name)
    return missing


def unplaceable_error(path: Path, series_files: int = 1) -> XaimedError:
    """Why a DICOM file without a usable ImagePositionPatient cannot be read as a volume."""
    ds = read_header(path)
    if ds is None:
        return XaimedError(f"{path.name!r} has no ImagePositionPatient (0020,0032) and pydicom "
                           "cannot parse it: the file may be truncated; copy it again.")
    what = describe(ds)
    if series_files > 1 and (is_enhanced(ds) or is_segmentation(ds)):
        return XaimedError(
            f"{path.name!r} is {what}, one of {series_files} files of its series: each such "
            "file is a volume of its own, not a slice. Open the file itself "
            f"(read_volume({str(path)!r})), or move it into a folder of its own.")
    if is_enhanced(ds) or is_segmentation(ds):
        return _missing_geometry_error(path, ds)
    return XaimedError(
        f"{path.name!r} is {what} without ImagePositionPatient (0020,0032) "
        f"(modality {getattr(ds, 'Modality', '?') or '?'}): an image not placed in patient "
        "space (a screenshot, photo, projection radiograph or ultrasound), so it is not a "
        "volume napari-xaimed can place in mm. Open a CT, MR or PET series instead; if this "
        "one should be placed, re-export it from the scanner or PACS.")


def _missing_geometry_error(path: Path, ds: Any) -> XaimedError:
    missing = missing_geometry(ds)
    lacks = ", ".join(missing) if missing else "usable plane positions"
    return XaimedError(
        f"{path.name!r} is {describe(ds)} but its functional groups lack {lacks} (in the "
        "Shared (5200,9229) or Per-frame (5200,9230) Functional Groups Sequence), so its "
        "frames cannot be placed in space. An anonymiser or converter may have stripped them: "
        "re-export the image from the scanner or PACS.")


def read_enhanced(path: str | Path, name: str | None = None) -> Volume:
    """Read an enhanced multi-frame image (Enhanced CT/MR/PET...) as one volume.

    Parameters
    ----------
    path : str or pathlib.Path
        The multi-frame DICOM file.
    name : str, optional
        Shown in messages (default: the file name).

    Returns
    -------
    Volume
        Voxels ``(z, y, x)`` sorted along the slice normal, modality values (rescale applied;
        integer when the values are, else float32); a colour image gets its channel axis first.

    Raises
    ------
    XaimedError
        If the frames lack plane geometry, do not form one regular volume (several stacks,
        time points or a missing frame), or the pixels cannot be decoded.
    """
    import highdicom as hd

    path = Path(path)
    name = name or path.name
    image = _load(path, hd.imread)
    if missing_geometry(image):
        raise _missing_geometry_error(path, image)
    try:
        volume = image.get_volume(
            apply_real_world_transform=False, apply_modality_transform=None,
            apply_voi_transform=False, apply_presentation_lut=False,
            apply_palette_color_lut=False, apply_icc_profile=False)
    except (ValueError, RuntimeError) as exc:
        raise XaimedError(
            f"{name!r} ({describe(image)}): its frames do not form one regular volume "
            f"({exc}). It may hold several stacks, echoes or time points, or miss a frame: "
            "split it (e.g. dcm2niix writes one file per stack) or re-export it.") from exc
    data = _as_compact(volume.array)
    return _to_volume(volume, data, path, name, is_label=False)


def read_segmentation(path: str | Path, name: str | None = None) -> Volume:
    """Read a DICOM-SEG as a label map: voxel value = segment number, 0 = background.

    Parameters
    ----------
    path : str or pathlib.Path
        The segmentation file (Segmentation Storage or Label Map Segmentation Storage).
    name : str, optional
        Shown in messages (default: the file name).

    Returns
    -------
    Volume
        ``.is_label`` True, ``.label_names`` ``{segment number: SegmentLabel}``, on the
        segmentation's own grid (its frames' positions), so it overlays its source image in
        world coordinates.

    Raises
    ------
    XaimedError
        If the frames lack plane geometry or are not on one regular grid, or segments overlap
        (a label map holds one label per voxel).
    """
    import highdicom as hd

    path = Path(path)
    name = name or path.name
    seg = _load(path, hd.seg.segread)
    if missing_geometry(seg):
        raise _missing_geometry_error(path, seg)
    names = {int(item.SegmentNumber): str(getattr(item, "SegmentLabel", "") or
                                          f"segment {int(item.SegmentNumber)}")
             for item in seg.SegmentSequence}
    try:
        volume = seg.get_volume(combine_segments=True, relabel=False,
                                allow_missing_positions=True)
    except (ValueError, RuntimeError) as exc:
        overlap = "overlap" in str(exc).lower()
        hint = ("Its segments overlap, and a label map holds one label per voxel: export the "
                "segments as separate files (e.g. 3D Slicer, one segment per file)."
                if overlap else "Its frames do not form one regular grid: re-export it.")
        raise XaimedError(f"Could not read the segmentation {name!r} ({exc}). {hint}") from exc
    return _to_volume(volume, np.asarray(volume.array), path, name, is_label=True,
                      label_names=names)


def _load(path: Path, loader: Any) -> Any:
    try:
        return loader(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types for bad files
        raise XaimedError(
            f"Could not read {path.name!r} ({type(exc).__name__}: {exc}): the file may be "
            "truncated, or not a multi-frame image or segmentation; copy it again.") from exc


def _as_compact(array: np.ndarray) -> np.ndarray:
    """Modality values as integers when they all are (int16 when they fit), else float32."""
    array = np.asarray(array)
    if array.dtype.kind != "f":
        return array
    finite = np.isfinite(array).all()
    if finite and np.array_equal(array, np.round(array)) and array.size:
        lo, hi = float(array.min()), float(array.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return array.astype(dtype)
    return array.astype(np.float32)


def _to_volume(volume: hd.Volume, data: np.ndarray, path: Path, name: str, *,
               is_label: bool, label_names: dict[int, str] | None = None) -> Volume:
    """A highdicom volume (axes slice, row, column; LPS) as a :class:`Volume` (z, y, x; RAS)
    whose z axis points along the slice normal, like a classic series read here."""
    from napari_xaimed.io.itk import LPS_TO_RAS, check_orthogonal
    from napari_xaimed.io.volume import Volume

    hd_affine = np.array(volume.affine, dtype=float)
    normal = np.cross(hd_affine[:3, 2], hd_affine[:3, 1])  # row direction x column direction
    if float(hd_affine[:3, 0] @ normal) < 0:  # highdicom stacked the slices against the normal
        hd_affine[:3, 3] += (data.shape[0] - 1) * hd_affine[:3, 0]
        hd_affine[:3, 0] *= -1
        data = data[::-1]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ hd_affine[:3, [2, 1, 0]]  # (column, row, slice) = (i, j, k)
    affine[:3, 3] = LPS_TO_RAS @ hd_affine[:3, 3]
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    check_orthogonal(affine[:3, :3] / zooms, name)
    if data.ndim == 4:  # colour: samples last in highdicom, channel first here
        data = np.moveaxis(data, -1, 0)
    return Volume(data=np.ascontiguousarray(data),
                  spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
                  affine=affine, is_label=is_label, path=path,
                  label_names=dict(label_names or {}))
