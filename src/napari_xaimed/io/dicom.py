"""DICOM series (a folder of slices) through SimpleITK's GDCM series reader.

The series of a folder are found and picked in :mod:`napari_xaimed.io.dicom_series` (by
SeriesInstanceUID or SeriesNumber; its names are importable from here too). Before the voxels
are read, the slices of a series are checked: one orientation, positions along one line
(no gantry tilt), no duplicates and an even spacing, so a missing slice is refused by name
instead of being stretched over (ITK only warns and averages the spacing).

A series of one file is looked at first: an enhanced multi-frame image (Enhanced CT/MR/PET,
frames placed by functional groups) or a DICOM-SEG is read through highdicom
(:mod:`napari_xaimed.io.dicom_frames`); a classic single slice gets the z spacing of its header:
SpacingBetweenSlices (0018,0088) when present, since it is the centre-to-centre distance a
voxel grid's spacing means, else SliceThickness (0018,0050) (slices that abut), else 1 mm.

The volume's geometry follows :mod:`napari_xaimed.io.itk` (LPS converted to the RAS affine that
:class:`~napari_xaimed.io.Volume` holds for every format). The Modality and the display window
(WindowCenter/WindowWidth of the first slice, or an enhanced file's Frame VOI LUT) are kept as
:attr:`~napari_xaimed.io.Volume.modality` and :attr:`~napari_xaimed.io.Volume.display_range`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.dicom_series import (  # noqa: F401 - also importable from here, as before
    DICOM_SUFFIXES,
    PROBE_FILES,
    TAG_DESCRIPTION,
    TAG_FRAMES,
    TAG_MODALITY,
    TAG_NUMBER,
    TAG_ORIENTATION,
    TAG_POSITION,
    TAG_SERIES_UID,
    TAG_SLICE_SPACING,
    TAG_THICKNESS,
    DicomSeries,
    _tags,
    is_dicom_file,
    is_dicom_folder,
    list_series,
    select_series,
    series_titles,
)

if TYPE_CHECKING:
    from napari_xaimed.io.volume import Volume

TAG_WINDOW_CENTER = "0028|1050"
TAG_WINDOW_WIDTH = "0028|1051"

# Slice spacing may vary by this much (relative to the median spacing, and at least the absolute
# floor in mm) before the series is refused: positions are written with limited decimals.
SPACING_TOLERANCE = 0.01
SPACING_FLOOR_MM = 0.01
# Slices shifted within their plane by more than this (mm) are a tilted, non-orthogonal grid.
LATERAL_TOLERANCE_MM = 0.1


def _vector(text: str, size: int, tag: str, path: Path, series_files: int = 1) -> np.ndarray:
    if not text:  # absent: say what the file is (multi-frame, SEG, screenshot...)
        from napari_xaimed.io.dicom_frames import unplaceable_error

        raise unplaceable_error(path, series_files)
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=float)
    except ValueError:
        values = np.array([])
    if values.shape != (size,):
        name = "ImagePositionPatient" if tag == TAG_POSITION else "ImageOrientationPatient"
        raise XaimedError(
            f"{path.name!r} has no valid {name} ({tag.replace('|', ',')}): {text!r}. Without it "
            "the slices cannot be placed in space: re-export the series from the scanner or PACS."
        )
    return values


def single_slice_spacing(spacing_between: str, thickness: str) -> float:
    """The z spacing (mm) of a lone slice: SpacingBetweenSlices when given (the centre-to-centre
    distance, what a grid's spacing is), else SliceThickness, else 1 mm."""
    for text in (spacing_between, thickness):
        try:
            value = abs(float(text))
        except ValueError:
            continue
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def sorted_slices(series: DicomSeries) -> tuple[list[Path], float]:
    """The slice files ordered along the slice normal, and their spacing in mm (for one
    file, from its header: see :func:`single_slice_spacing`).

    Raises
    ------
    XaimedError
        If the slices differ in orientation, are shifted within their plane (gantry tilt: not an
        orthogonal grid), share a position, or are unevenly spaced (a missing slice: the message
        names the gap and the files on either side).
    """
    geometry = []
    count = len(series.files)
    for path in series.files:
        tags = _tags(path, (TAG_POSITION, TAG_ORIENTATION, TAG_THICKNESS, TAG_SLICE_SPACING))
        geometry.append((path, _vector(tags[TAG_POSITION], 3, TAG_POSITION, path, count),
                         _vector(tags[TAG_ORIENTATION], 6, TAG_ORIENTATION, path, count)))
    orientation = geometry[0][2]
    for path, _, other in geometry[1:]:
        if not np.allclose(other, orientation, atol=1e-4):
            raise XaimedError(
                f"Series {series.label!r} mixes slice orientations ({geometry[0][0].name!r} and "
                f"{path.name!r} differ): it is not one volume. Separate the acquisitions (e.g. "
                "remove localizer images) or re-export the series."
            )
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    along = np.array([pos @ normal for _, pos, _ in geometry])
    order = np.argsort(along, kind="stable")
    files = [geometry[i][0] for i in order]
    positions = np.array([geometry[i][1] for i in order])
    along = along[order]
    offsets = positions - positions[0]
    lateral = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if lateral.max() > LATERAL_TOLERANCE_MM:
        raise XaimedError(
            f"Series {series.label!r}: its slices are shifted within their plane by up to "
            f"{lateral.max():.2f} mm (a gantry tilt), so the voxel grid is not orthogonal: the "
            "volume must be resampled to an orthogonal grid first (e.g. 3D Slicer's DICOM "
            "import with 'acquisition geometry regularization', or dcm2niix)."
        )
    if len(files) == 1:
        return files, single_slice_spacing(tags[TAG_SLICE_SPACING], tags[TAG_THICKNESS])
    gaps = np.diff(along)
    same = np.flatnonzero(gaps < SPACING_FLOOR_MM)
    if same.size:
        i = int(same[0])
        raise XaimedError(
            f"Series {series.label!r}: {files[i].name!r} and {files[i + 1].name!r} lie at the same "
            f"position ({along[i]:.2f} mm along the slice normal): duplicate files or two "
            "acquisitions under one SeriesInstanceUID. Remove the duplicates and open it again."
        )
    step = float(gaps.min())  # a missing slice only ever widens a gap
    tolerance = max(SPACING_FLOOR_MM, SPACING_TOLERANCE * step)
    uneven = np.flatnonzero(np.abs(gaps - step) > tolerance)
    if uneven.size:
        i = int(uneven[0])
        gap = float(gaps[i])
        missing = int(round(gap / step)) - 1
        what = (f"about {missing} slice{'s' * (missing != 1)} missing" if missing >= 1
                else "the spacing is uneven")
        raise XaimedError(
            f"Series {series.label!r} has a gap: slices are {step:g} mm apart, but "
            f"{files[i].name!r} (at {along[i]:.2f} mm) and {files[i + 1].name!r} (at "
            f"{along[i + 1]:.2f} mm along the slice normal) are {gap:g} mm apart: {what}. "
            "Copy or export the complete series again; if the spacing really varies, resample "
            "it to an even grid first. Nothing was read."
        )
    return files, float(along[-1] - along[0]) / (len(files) - 1)


def read_series(series: DicomSeries) -> Volume:
    """Read one checked series into a :class:`~napari_xaimed.io.Volume` (``(z, y, x)``): a
    series of one enhanced multi-frame or SEG file through highdicom, others through GDCM."""
    import SimpleITK as sitk

    from napari_xaimed.io.itk import volume_from_image

    if len(series.files) == 1:
        special = read_multiframe(series.files[0], series.label)
        if special is not None:
            return special
    files, step = sorted_slices(series)
    folder = files[0].parent
    try:
        if len(files) == 1:  # one file: a single slice or a multi-frame image
            image = sitk.ReadImage(str(files[0]), imageIO="GDCMImageIO")
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileNames([str(f) for f in files])
            image = reader.Execute()
    except RuntimeError as exc:
        raise XaimedError(
            f"Could not read DICOM series {series.label!r} in {str(folder)!r} "
            f"({str(exc).strip().splitlines()[-1]}): a file may be truncated or compressed with "
            "a codec GDCM lacks; re-export the series uncompressed."
        ) from exc
    if len(files) > 1 or (image.GetDimension() == 3 and image.GetSize()[2] == 1):
        spacing = list(image.GetSpacing())
        # the checked spacing between positions, not ITK's average; a lone slice's from its
        # header (GDCM gives an MR slice 1 mm whatever its SliceThickness)
        spacing[2] = step
        image.SetSpacing(spacing)
    from napari_xaimed.io.contrast import dicom_window

    tags = _tags(files[0], (TAG_WINDOW_CENTER, TAG_WINDOW_WIDTH, TAG_MODALITY))
    return replace(volume_from_image(image, folder, series.label),
                   display_range=dicom_window(tags[TAG_WINDOW_CENTER], tags[TAG_WINDOW_WIDTH]),
                   modality=tags[TAG_MODALITY] or series.modality)


def _first(value: Any) -> Any:
    """The first of a multi-valued DICOM element (pydicom's MultiValue), else the value."""
    return value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value


def header_window(ds: Any) -> tuple[float, float] | None:
    """The display range of a pydicom dataset's window: top-level WindowCenter/WindowWidth,
    else the Frame VOI LUT of an enhanced file's shared, then first per-frame, functional
    groups; None when it has none."""
    from napari_xaimed.io.contrast import dicom_window

    candidates = [ds]
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = getattr(ds, group, None) or []
        luts = getattr(items[0], "FrameVOILUTSequence", None) if len(items) else None
        candidates.extend(luts or [])
    for item in candidates:
        centre, width = getattr(item, "WindowCenter", None), getattr(item, "WindowWidth", None)
        if centre is not None and width is not None:
            found = dicom_window(str(_first(centre)), str(_first(width)))
            if found is not None:
                return found
    return None


def read_multiframe(path: Path, name: str | None = None) -> Volume | None:
    """A DICOM-SEG or enhanced multi-frame file read through highdicom; None for any other
    file (a classic slice or legacy multi-frame: GDCM reads those)."""
    from napari_xaimed.io import dicom_frames as frames

    ds = frames.read_header(path)
    if ds is None:
        return None
    if frames.is_segmentation(ds):
        return frames.read_segmentation(path, name)
    if frames.is_enhanced(ds):
        return replace(frames.read_enhanced(path, name), display_range=header_window(ds),
                       modality=str(getattr(ds, "Modality", "")))
    return None


def read_dicom(path: str | Path, series: str | int | None = None) -> Volume:
    """Read a DICOM series from its folder, or from one of its files.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder of DICOM files, or one DICOM file: its series is read from its folder; an
        enhanced multi-frame or DICOM-SEG file is read on its own (it is a whole volume).
    series : str or int, optional
        The SeriesInstanceUID, or the SeriesNumber, of the series to read when the folder
        holds several.

    Returns
    -------
    Volume
        ``.path`` is the folder (the file, for an enhanced multi-frame or SEG file);
        ``.metadata`` is empty (DICOM carries no xaimed provenance).

    Raises
    ------
    XaimedError
        See :func:`select_series` and :func:`sorted_slices`.
    """
    path = Path(path)
    if path.is_dir():
        return read_series(select_series(path, series))
    if series is None:
        whole = read_multiframe(path)
        if whole is not None:
            return whole
    return read_series(select_series(path.parent, series, file=path))


def read_all_series(folder: str | Path) -> list[tuple[DicomSeries, Volume | XaimedError]]:
    """Every series of a folder, read, or the error that refused it.

    What the napari reader opens (a layer per series); from a script, the way to read all the
    series of a folder that :func:`~napari_xaimed.io.read_volume` refuses to choose among.

    Returns
    -------
    list of (DicomSeries, Volume or XaimedError)
        In :func:`list_series` order (largest first).
    """
    found = list_series(folder)
    if not found:
        select_series(Path(folder))  # raises the 'no series' error
    results: list[tuple[DicomSeries, Volume | XaimedError]] = []
    for item in found:
        try:
            results.append((item, read_series(item)))
        except XaimedError as exc:
            results.append((item, exc))
    return results
