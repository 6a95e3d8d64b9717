"""DICOM series (a folder of slices) through SimpleITK's GDCM series reader.

A folder may hold several series; each is told apart by its SeriesInstanceUID. Before the voxels
are read, the slices of a series are checked: one orientation, positions along one line
(no gantry tilt), no duplicates and an even spacing, so a missing slice is refused by name
instead of being stretched over (ITK only warns and averages the spacing).

The volume's geometry follows :mod:`napari_xaimed.io_itk` (LPS converted to the RAS affine that
:class:`~napari_xaimed.io.Volume` holds for every format).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_xaimed._errors import XaimedError

if TYPE_CHECKING:
    from napari_xaimed.io import Volume

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
TAG_SERIES_UID = "0020|000e"
TAG_DESCRIPTION = "0008|103e"
TAG_NUMBER = "0020|0011"
TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
# Slice spacing may vary by this much (relative to the median spacing, and at least the absolute
# floor in mm) before the series is refused: positions are written with limited decimals.
SPACING_TOLERANCE = 0.01
SPACING_FLOOR_MM = 0.01
# Slices shifted within their plane by more than this (mm) are a tilted, non-orthogonal grid.
LATERAL_TOLERANCE_MM = 0.1
# How many files of a folder are looked at to decide whether it is a DICOM folder at all.
PROBE_FILES = 32


@dataclass(frozen=True)
class DicomSeries:
    """One series of a DICOM folder.

    Attributes
    ----------
    uid : str
        SeriesInstanceUID (0020,000E), what ``read_volume(folder, series=...)`` takes.
    description : str
        SeriesDescription (0008,103E), may be empty.
    number : str
        SeriesNumber (0020,0011), may be empty.
    files : tuple of pathlib.Path
        Its slice files, as GDCM found them.
    """

    uid: str
    description: str
    number: str
    files: tuple[Path, ...]

    @property
    def label(self) -> str:
        """A short human name: the description, else ``series <number>``, else the UID."""
        if self.description:
            return self.description
        return f"series {self.number}" if self.number else self.uid

    def summary(self) -> str:
        """``UID (description, N slices)`` for messages."""
        what = self.description or "no description"
        return f"{self.uid} ({what}, {len(self.files)} slice{'s' * (len(self.files) != 1)})"


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file: a DICOM extension, or the ``DICM`` preamble marker."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with DICOM files in it (the first files are probed)."""
    path = Path(path)
    if not path.is_dir():
        return False
    files = (p for p in sorted(path.iterdir()) if p.is_file())
    return any(is_dicom_file(p) for _, p in zip(range(PROBE_FILES), files, strict=False))


def _tags(path: Path, keys: tuple[str, ...]) -> dict[str, str]:
    """The values of some tags of one file ('' for absent ones), without reading pixels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise XaimedError(
            f"Could not read the DICOM header of {path.name!r} ({str(exc).strip().splitlines()[-1]}"
            "): the file may be truncated; remove it or copy the series again."
        ) from exc
    return {k: reader.GetMetaData(k).strip(" \x00") if reader.HasMetaDataKey(k) else ""
            for k in keys}


def list_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series in a folder (not its subfolders), largest first.

    Parameters
    ----------
    folder : str or pathlib.Path
        A folder of DICOM files.

    Returns
    -------
    list of DicomSeries
        One entry per SeriesInstanceUID, sorted by slice count (most first), then UID.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(Path(f) for f in
                      sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        tags = _tags(files[0], (TAG_DESCRIPTION, TAG_NUMBER))
        found.append(DicomSeries(uid=uid.strip(" \x00"), description=tags[TAG_DESCRIPTION],
                                 number=tags[TAG_NUMBER], files=files))
    return sorted(found, key=lambda s: (-len(s.files), s.uid))


def select_series(folder: Path, series: str | None = None,
                  file: Path | None = None) -> DicomSeries:
    """The series to read: the only one, the one named by ``series``, or the one of ``file``.

    Raises
    ------
    XaimedError
        If the folder holds no series, the UID is not among them, or there are several and none
        was picked (the message lists them with UID, description and slice count).
    """
    found = list_series(folder)
    if not found:
        raise XaimedError(
            f"No DICOM series found in {str(folder)!r}: point to the folder that holds the "
            "slice files (not a parent folder) and check that they are DICOM images."
        )
    listing = "\n".join(f"  {s.summary()}" for s in found)
    if series is not None:
        for candidate in found:
            if candidate.uid == series.strip():
                return candidate
        raise XaimedError(
            f"No series {series!r} in {str(folder)!r}; it holds:\n{listing}\n"
            "Pass one of these SeriesInstanceUIDs as series=."
        )
    if file is not None:
        for candidate in found:
            if any(f.resolve() == file.resolve() for f in candidate.files):
                return candidate
    if len(found) == 1:
        return found[0]
    raise XaimedError(
        f"{str(folder)!r} holds {len(found)} DICOM series:\n{listing}\n"
        f"Pick one with read_volume(folder, series='<SeriesInstanceUID>') (e.g. "
        f"series={found[0].uid!r}, the largest), or move each series into its own folder. "
        "napari opens every series of the folder as its own layer."
    )


def _vector(text: str, size: int, tag: str, path: Path) -> np.ndarray:
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


def sorted_slices(series: DicomSeries) -> tuple[list[Path], float]:
    """The slice files ordered along the slice normal, and their spacing in mm.

    Raises
    ------
    XaimedError
        If the slices differ in orientation, are shifted within their plane (gantry tilt: not an
        orthogonal grid), share a position, or are unevenly spaced (a missing slice: the message
        names the gap and the files on either side).
    """
    geometry = []
    for path in series.files:
        tags = _tags(path, (TAG_POSITION, TAG_ORIENTATION))
        geometry.append((path, _vector(tags[TAG_POSITION], 3, TAG_POSITION, path),
                         _vector(tags[TAG_ORIENTATION], 6, TAG_ORIENTATION, path)))
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
        return files, 1.0
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
    """Read one checked series into a :class:`~napari_xaimed.io.Volume` (``(z, y, x)``)."""
    import SimpleITK as sitk

    from napari_xaimed.io_itk import volume_from_image

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
    if len(files) > 1:
        spacing = list(image.GetSpacing())
        spacing[2] = step  # the checked spacing between positions, not ITK's average
        image.SetSpacing(spacing)
    return volume_from_image(image, folder, series.label)


def read_dicom(path: str | Path, series: str | None = None) -> Volume:
    """Read a DICOM series from its folder, or from one of its files.

    Parameters
    ----------
    path : str or pathlib.Path
        A folder of DICOM files, or one DICOM file (its series is read from its folder).
    series : str, optional
        The SeriesInstanceUID to read when the folder holds several series.

    Returns
    -------
    Volume
        ``.path`` is the folder; ``.metadata`` is empty (DICOM carries no xaimed provenance).

    Raises
    ------
    XaimedError
        See :func:`select_series` and :func:`sorted_slices`.
    """
    path = Path(path)
    if path.is_dir():
        return read_series(select_series(path, series))
    return read_series(select_series(path.parent, series, file=path))


def read_all_series(folder: str | Path) -> list[tuple[DicomSeries, Volume | XaimedError]]:
    """Every series of a folder, read, or the error that refused it (for the napari reader)."""
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
