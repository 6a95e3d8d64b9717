"""The DICOM series of a folder: finding them (GDCM), naming them, and picking one.

A folder may hold several series; each is told apart by its SeriesInstanceUID and picked by
that UID or by its SeriesNumber. :mod:`napari_xaimed.io.dicom` reads the series picked here
(and re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from napari_xaimed._core.errors import XaimedError

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
TAG_SERIES_UID = "0020|000e"
TAG_DESCRIPTION = "0008|103e"
TAG_NUMBER = "0020|0011"
TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_MODALITY = "0008|0060"
TAG_FRAMES = "0028|0008"
TAG_THICKNESS = "0018|0050"
TAG_SLICE_SPACING = "0018|0088"
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
        SeriesNumber (0020,0011), may be empty; ``read_volume(folder, series=...)`` takes it
        too when no other series of the folder has the same number.
    files : tuple of pathlib.Path
        Its slice files, as GDCM found them.
    modality : str
        Modality (0008,0060) of its first file (``CT``, ``MR``, ``SEG``...), may be empty.
    frames : int
        NumberOfFrames (0028,0008) of its first file: more than 1 for a multi-frame image.
    """

    uid: str
    description: str
    number: str
    files: tuple[Path, ...]
    modality: str = ""
    frames: int = 1

    @property
    def label(self) -> str:
        """A short human name: the description, else ``series <number>``, else the UID."""
        if self.description:
            return self.description
        return f"series {self.number}" if self.number else self.uid

    @property
    def size(self) -> int:
        """Slices: its files, or the frames of a series of one multi-frame file."""
        return len(self.files) if len(self.files) > 1 else max(1, self.frames)

    def summary(self) -> str:
        """``UID (description, N slices)`` for messages (``N frames`` for one multi-frame
        file)."""
        what = self.description or "no description"
        unit = "frame" if len(self.files) == 1 and self.frames > 1 else "slice"
        return f"{self.uid} ({what}, {self.size} {unit}{'s' * (self.size != 1)})"

    def listing(self) -> str:
        """``MR series 4: UID (description, N slices)``, a line of the messages that list
        a folder's series."""
        head = " ".join(part for part in (self.modality, "series", self.number) if part)
        return f"{head}: {self.summary()}"


def series_titles(found: list[DicomSeries]) -> list[str]:
    """A distinct short name per series (layer names): the description, else ``series N``;
    the modality, then the end of the UID, is added where two would read the same."""
    titles = [s.label for s in found]
    for extra in (lambda s: s.modality, lambda s: f"...{s.uid[-6:]}"):
        repeated = {t for t in titles if titles.count(t) > 1}
        titles = [f"{t} ({extra(s)})" if t in repeated and extra(s) else t
                  for t, s in zip(titles, found, strict=True)]
    return titles


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
        One entry per SeriesInstanceUID, sorted by slice count (most first; the frames of a
        multi-frame file count), then UID.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(Path(f) for f in
                      sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        tags = _tags(files[0], (TAG_DESCRIPTION, TAG_NUMBER, TAG_MODALITY, TAG_FRAMES))
        frames = tags[TAG_FRAMES]
        found.append(DicomSeries(uid=uid.strip(" \x00"), description=tags[TAG_DESCRIPTION],
                                 number=tags[TAG_NUMBER], files=files,
                                 modality=tags[TAG_MODALITY],
                                 frames=int(frames) if frames.isdigit() else 1))
    return sorted(found, key=lambda s: (-s.size, s.uid))


def select_series(folder: Path, series: str | int | None = None,
                  file: Path | None = None) -> DicomSeries:
    """The series to read: the only one, the one named by ``series`` (its SeriesInstanceUID,
    or its SeriesNumber when no other series has that number), or the one of ``file``.

    Raises
    ------
    XaimedError
        If the folder holds no series, ``series`` names none of them (or a number several
        share), or there are several and none was picked (the message lists them with
        modality, number, UID, description and slice count).
    """
    found = list_series(folder)
    if not found:
        raise XaimedError(
            f"No DICOM series found in {str(folder)!r}: point to the folder that holds the "
            "slice files (not a parent folder) and check that they are DICOM images."
        )
    listing = "\n".join(f"  {s.listing()}" for s in found)
    if series is not None:
        wanted = str(series).strip()
        by_uid = [s for s in found if s.uid == wanted]
        by_number = [s for s in found if s.number and s.number == wanted]
        if by_uid or len(by_number) == 1:
            return (by_uid or by_number)[0]
        if by_number:
            raise XaimedError(
                f"{len(by_number)} series of {str(folder)!r} have SeriesNumber {wanted}:\n"
                + "\n".join(f"  {s.listing()}" for s in by_number)
                + "\nPass the SeriesInstanceUID of the one to read as series=.")
        raise XaimedError(
            f"No series {series!r} in {str(folder)!r}; it holds:\n{listing}\n"
            "Pass one of these SeriesInstanceUIDs (or a SeriesNumber) as series=."
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
        f"series={found[0].uid!r}, the largest) or series=<SeriesNumber>, read them all "
        "with napari_xaimed.io.dicom.read_all_series(folder), or move each series into its "
        "own folder. napari opens every series of the folder as its own layer."
    )
