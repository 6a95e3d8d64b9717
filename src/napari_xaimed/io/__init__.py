"""Read and write volumes in numpy's axis order: NIfTI, NRRD, MetaImage and DICOM series.

Formats: NIfTI (``.nii``, ``.nii.gz``, through nibabel), NRRD (``.nrrd``, ``.nhdr``) and
MetaImage (``.mha``, ``.mhd``) through SimpleITK (:mod:`napari_xaimed.io.itk`), and DICOM series
(a folder, or one of its files; read only) through SimpleITK's GDCM reader
(:mod:`napari_xaimed.io.dicom`), enhanced multi-frame DICOM images and DICOM-SEG label maps
through highdicom (:mod:`napari_xaimed.io.dicom_frames`). :func:`read_volume` and
:func:`write_volume` pick the format from the suffix (a folder is DICOM).

NIfTI stores voxels as ``(x, y, z[, t, ...])``; napari and numpy index ``(z, y, x)``. Reading
reverses the axes (so a 4D ``(x, y, z, t)`` file becomes ``(t, z, y, x)``: the extra axis first),
and writing reverses them back, so a read-then-write round trip keeps voxels, spacing and affine.
NIfTI lengths are read in the header's unit (``xyzt_units``: mm, micron or meter;
``unknown`` taken as mm) and converted to mm, spacing and affine alike; files are written in mm.
The other formats index their voxels the same way (``(i, j, k)`` = ``(x, y, z)``), so one
phantom saved in any of them reads back as the same array.

**World frame.** :attr:`Volume.affine` is always the NIfTI-convention voxel-to-world matrix:
voxel indices in ``(i, j, k)`` = ``(x, y, z)`` order, world coordinates in mm in RAS (x to the
patient's right, y anterior, z superior). ITK formats and DICOM store LPS; they are converted
with ``diag(-1, -1, 1)``, so the same voxel has the same world coordinates whatever the file.
napari shows a volume on its own voxel axes: ``scale`` = spacing and ``translate`` =
:attr:`Volume.translate`, the world position of voxel ``(0, 0, 0)`` expressed along the voxel
axes (``(z, y, x)``, mm). For an axis-aligned, unflipped volume that is its origin; for an oblique
one it is the origin rotated onto the volume's axes, so volumes that share an orientation overlay
exactly in the viewer. The full orientation travels in the layer metadata so that writing the
layer back restores it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
NIFTI_INTENT_LABEL = 1002
# Filenames that say "this is a segmentation", as written by common tools (nnU-Net, FreeSurfer,
# ITK-SNAP, 3D Slicer).
_LABEL_NAME = re.compile(r"(^|[^a-z])(seg|segmentation|label|labels|mask|parc|aseg|gt|truth)([^a-z]|$)")


@dataclass
class Volume:
    """A volume read from disk.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        Voxels in ``(z, y, x)`` order; extra axes (time, channel, vector components) come first.
        A dask array (nothing loaded) for a Zarr store or a NIfTI read with ``lazy=True``.
    spacing : tuple of float
        Voxel size in millimetres in ``(z, y, x)`` order.
    affine : numpy.ndarray
        The 4x4 voxel-to-world matrix in NIfTI convention whatever the format: voxel index order
        ``(i, j, k)`` = ``(x, y, z)``, world in RAS mm (converted from LPS for NRRD, MetaImage
        and DICOM).
    is_label : bool
        Whether the file holds a label map (integer classes or instances) rather than intensities.
    metadata : dict
        The JSON sidecar written beside the file (provenance), empty when there is none.
    path : pathlib.Path or None
        Where the volume was read from (the folder, for a DICOM series).
    label_names : dict of int to str
        Names of the label values of a label map, where the file says them (the segments of
        a DICOM-SEG: ``{segment number: SegmentLabel}``); empty otherwise.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    is_label: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    label_names: dict[int, str] = field(default_factory=dict)

    @property
    def translate(self) -> tuple[float, float, float]:
        """World position (mm) of voxel ``(0, 0, 0)`` along the voxel axes, ``(z, y, x)``: the
        napari ``translate`` of this volume (see the module docstring)."""
        return grid_translate(self.affine)


def grid_translate(affine: np.ndarray) -> tuple[float, float, float]:
    """The napari ``translate`` of a NIfTI-convention affine, in ``(z, y, x)`` mm.

    The origin (``affine[:3, 3]``) written in the basis of the unit voxel axes: for a rotation
    ``R`` of the voxel axes that is ``R.T @ origin``, which does not depend on whether the world
    frame is RAS or LPS.
    """
    affine = np.asarray(affine, dtype=float)
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    xyz = np.linalg.lstsq(axes, affine[:3, 3], rcond=None)[0]
    return float(xyz[2]), float(xyz[1]), float(xyz[0])


def affine_from_grid(spacing: tuple[float, ...], translate: tuple[float, ...],
                     template: np.ndarray | None = None) -> np.ndarray:
    """The affine of a layer's ``scale`` and ``translate`` (``(z, y, x)``), inverse of
    :func:`grid_translate`: the voxel axes' directions come from ``template`` (identity when
    None), their lengths from ``spacing``, and the origin from ``translate`` along them."""
    axes = np.eye(3) if template is None else (
        np.asarray(template, dtype=float)[:3, :3]
        / np.linalg.norm(np.asarray(template, dtype=float)[:3, :3], axis=0))
    affine = np.eye(4)
    affine[:3, :3] = axes @ np.diag([spacing[2], spacing[1], spacing[0]])
    affine[:3, 3] = axes @ np.array([translate[2], translate[1], translate[0]], dtype=float)
    return affine


def is_volume_path(path: str | Path) -> bool:
    """Whether :func:`read_volume` reads ``path``: a file of a known suffix, a DICOM file, or a
    folder of DICOM files."""
    from napari_xaimed.io.dicom import is_dicom_file, is_dicom_folder
    from napari_xaimed.io.lazy import is_zarr_path

    return (str(path).lower().endswith(VOLUME_SUFFIXES) or is_zarr_path(path)
            or is_dicom_folder(path) or is_dicom_file(path))


def is_nifti_path(path: str | Path) -> bool:
    """Return whether ``path`` names a NIfTI file by its extension."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def volume_stem(path: str | Path) -> str:
    """The file name without its volume suffix: ``ct.nii.gz`` -> ``ct``, ``ct.nrrd`` -> ``ct``,
    ``ct.ome.zarr`` -> ``ct``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".ome.zarr", ".zarr",
                   *sorted(VOLUME_SUFFIXES, key=len, reverse=True)):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def sidecar_path(path: str | Path) -> Path:
    """The JSON provenance file that belongs to a volume file: ``ct.nii.gz`` -> ``ct.json``."""
    path = Path(path)
    return path.with_name(volume_stem(path) + ".json")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The JSON provenance beside a volume file, ``{}`` when there is none (or for a folder)."""
    if path.is_dir():
        return {}
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise XaimedError(
            f"The provenance file {side.name!r} beside {path.name!r} is not valid JSON ({exc}): "
            "fix or remove it."
        ) from exc


def read_volume(path: str | Path, *, series: str | int | None = None, lazy: bool = False,
                spacing: tuple[float, float, float] | None = None) -> Volume:
    """Read a volume into ``(z, y, x)`` order with its spacing and affine.

    Parameters
    ----------
    path : str or pathlib.Path
        A NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``,
        ``.mhd``) file, a folder of DICOM files, one DICOM file (its series is read; an
        enhanced multi-frame image or a DICOM-SEG is read on its own), or a Zarr store
        (``.zarr``: always lazy, see :mod:`napari_xaimed.io.lazy`).
    series : str or int, optional
        DICOM only: the series to read when the folder holds several, by SeriesInstanceUID or
        by SeriesNumber (when no other series shares it). Without it such a folder is refused
        with a list of its series; :func:`napari_xaimed.io.dicom.read_all_series` reads them
        all.
    lazy : bool
        NIfTI: ``.data`` becomes a :class:`dask.array.Array` over the file (a memory map for
        ``.nii``) and nothing is loaded until a slab is computed, for volumes larger than
        memory. A Zarr store is always read lazily.
    spacing : tuple of float, optional
        Zarr and lazy NIfTI: the voxel size in mm ``(z, y, x)``, overriding the file's; needed
        for a Zarr store that does not say its spacing.

    Returns
    -------
    Volume
        ``.data`` in ``(z, y, x)`` (extra axes first), ``.spacing`` in mm in the same order,
        ``.affine`` the RAS voxel-to-world matrix in NIfTI convention (as a NIfTI file stores
        it; converted from LPS for the other formats), ``.is_label`` and the JSON sidecar as
        ``.metadata``.

    Raises
    ------
    XaimedError
        If the path does not exist or is of no known format, the file cannot be decoded
        (truncated or corrupt), its voxel grid is not orthogonal, or a DICOM folder holds
        several series and none was picked, or a series misses slices.

    Examples
    --------
    >>> vol = read_volume("ct.nrrd")  # doctest: +SKIP
    >>> vol = read_volume("dicom/", series="1.2.840.1234")  # doctest: +SKIP
    >>> vol = read_volume("dicom/", series=3)  # SeriesNumber 3  # doctest: +SKIP
    """
    from napari_xaimed.io.lazy import is_zarr_path, read_nifti_lazy, read_zarr

    path = Path(path)
    if is_zarr_path(path):
        if series is not None:
            raise XaimedError("series= picks a DICOM series; a Zarr store has none: leave it "
                              "out.")
        return read_zarr(path, spacing=spacing)
    if lazy or spacing is not None:
        if not (is_nifti_path(path) and path.is_file()):
            if not path.exists():
                raise XaimedError(f"No file at {str(path)!r}: check the path.")
            raise XaimedError(
                f"lazy= and spacing= apply to NIfTI files and Zarr stores; {path.name!r} is "
                "neither: convert it (write_volume to .nii, or io_lazy.write_zarr), or read it "
                "in memory without them.")
        if lazy:
            return read_nifti_lazy(path, spacing=spacing)
        raise XaimedError("spacing= overrides the file's only when reading lazily: pass "
                          "lazy=True, or set the spacing with write_volume.")
    if path.is_dir():
        from napari_xaimed.io.dicom import read_dicom

        return read_dicom(path, series)
    known = str(path).lower().endswith(VOLUME_SUFFIXES)
    if not path.is_file():
        if known or path.exists():
            raise XaimedError(f"No file at {str(path)!r}: check the path.")
        raise _unknown_format(path)
    if _is_dicom(path) and not known:
        from napari_xaimed.io.dicom import read_dicom

        return read_dicom(path, series)
    if series is not None:
        raise XaimedError(
            f"series= picks a DICOM series; {path.name!r} is not DICOM: leave it out.")
    if str(path).lower().endswith(ITK_SUFFIXES):
        from napari_xaimed.io.itk import read_itk_file

        return read_itk_file(path)
    if not is_nifti_path(path):
        raise _unknown_format(path)
    return _read_nifti(path)


def _unknown_format(path: Path) -> XaimedError:
    return XaimedError(
        f"{path.name!r} is not a NIfTI, NRRD, MetaImage or DICOM file: expected one of "
        f"{', '.join(VOLUME_SUFFIXES)}, a DICOM file, or a folder of DICOM files.")


def _is_dicom(path: Path) -> bool:
    from napari_xaimed.io.dicom import is_dicom_file

    return is_dicom_file(path)


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files (EOFError, zlib, ...)
        raise XaimedError(
            f"Could not read {path.name!r} as NIfTI ({type(exc).__name__}: {exc}). The file may be "
            "truncated or not a NIfTI image: re-export it or check the download."
        ) from exc
    return volume_from_nifti(img, path.name, path=path, raw=raw)


def volume_from_nifti(img: Any, name: str = "image", *, path: Path | None = None,
                      raw: np.ndarray | None = None) -> Volume:
    """A nibabel NIfTI image (on disk or in memory) as a :class:`Volume`.

    The conversion :func:`read_volume` applies to a NIfTI file: axes reversed to ``(z, y, x)``
    (extra axes first), spacing from the header zooms in the same order, the affine as stored;
    both converted to mm from the header's spatial unit (see :func:`nifti_mm_per_unit`).

    Parameters
    ----------
    img : nibabel.Nifti1Image or nibabel.Nifti2Image
    name : str
        Shown in messages and used to guess a label map from the name (``*_seg``, ``mask``...).
    path : pathlib.Path, optional
        The file it came from: its JSON sidecar becomes ``.metadata``.
    raw : numpy.ndarray, optional
        The voxels already read from ``img`` (default: read them).

    Returns
    -------
    Volume
    """
    if raw is None:
        raw = np.asanyarray(img.dataobj)
    to_mm = nifti_mm_per_unit(img.header)
    zooms = [float(z) for z in img.header.get_zooms()]
    zooms = [z * to_mm for z in zooms[:3]] + zooms[3:]
    if raw.ndim < 2:
        raise XaimedError(f"{name!r} holds a {raw.ndim}D array: expected an image volume.")
    if raw.ndim == 2:  # a single slice: give it a z axis so it stays a volume
        raw = raw[:, :, np.newaxis]
        zooms = zooms[:2] + [1.0]
    spatial = zooms[:3] if len(zooms) >= 3 else zooms + [1.0] * (3 - len(zooms))
    spacing = tuple(z if z > 0 else 1.0 for z in reversed(spatial))

    data = np.ascontiguousarray(np.transpose(raw))
    intent = img.header.get_intent()[0] if hasattr(img.header, "get_intent") else ""
    metadata = read_sidecar(path) if path is not None else {}
    is_label = intent == "label" or _looks_like_labels(data, name)
    return Volume(
        data=data,
        spacing=spacing,  # type: ignore[arg-type]
        affine=nifti_affine_mm(img),
        is_label=bool(is_label),
        metadata=metadata,
        path=path,
    )


#: Millimetres per NIfTI spatial unit, by nibabel's name of ``xyzt_units``' spatial part.
NIFTI_MM_PER_UNIT = {"mm": 1.0, "micron": 1e-3, "meter": 1e3, "unknown": 1.0}


def nifti_mm_per_unit(header: Any) -> float:
    """Millimetres per spatial unit of a NIfTI header (``xyzt_units``).

    NIfTI stores voxel sizes (``pixdim``) and world coordinates (qform, sform) in the unit its
    header names: ``mm``, ``micron`` or ``meter``, so a microscopy file in micrometres reads
    1000 times too large unless converted. ``unknown`` (code 0, what many writers leave) is
    taken as mm, NIfTI's common practice and what ITK and FSL assume.

    Parameters
    ----------
    header : nibabel.Nifti1Header or nibabel.Nifti2Header

    Returns
    -------
    float
        The factor that turns the header's lengths into mm: 1e-3 for micron, 1e3 for meter.
    """
    get_units = getattr(header, "get_xyzt_units", None)
    unit = get_units()[0] if get_units is not None else "unknown"
    return NIFTI_MM_PER_UNIT.get(unit, 1.0)


def nifti_affine_mm(img: Any) -> np.ndarray:
    """The voxel-to-world affine of a nibabel NIfTI image with world coordinates in mm: the
    stored affine with its rows scaled by :func:`nifti_mm_per_unit` (voxel size and origin)."""
    affine = np.asarray(img.affine, dtype=float).copy()
    affine[:3] *= nifti_mm_per_unit(img.header)
    return affine


def _looks_like_labels(data: np.ndarray, name: str) -> bool:
    """Guess whether an integer volume is a label map.

    CT is often stored as int16, so an integer dtype alone says nothing. A label map has
    non-negative integer values, few distinct ones, and mostly background; a segmentation-like file
    name is accepted with fewer checks.
    """
    if not (np.issubdtype(data.dtype, np.integer) or data.dtype == bool):
        return False
    if data.size == 0:
        return False
    lo, hi = int(data.min()), int(data.max())
    if lo < 0:
        return False
    if _LABEL_NAME.search(volume_stem(name).lower()):
        return True
    if hi > 10_000:
        return False
    counts = np.bincount(data.ravel().astype(np.int64, copy=False), minlength=hi + 1)
    distinct = int(np.count_nonzero(counts))
    background_share = counts[0] / data.size
    return distinct <= 256 and background_share >= 0.5


def write_volume(
    path: str | Path,
    data: np.ndarray,
    spacing: tuple[float, ...] | None = None,
    affine: np.ndarray | None = None,
    *,
    is_label: bool | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a ``(z, y, x)`` volume to NIfTI, NRRD or MetaImage, and its provenance beside it.

    Parameters
    ----------
    path : str or pathlib.Path
        Target file; its suffix picks the format: ``.nii`` or ``.nii.gz`` (NIfTI), ``.nrrd`` or
        ``.nhdr`` (NRRD; ``.nhdr`` puts the voxels in a separate ``.raw.gz``), ``.mha`` or
        ``.mhd`` (MetaImage; ``.mhd`` puts them in a ``.zraw``). NRRD and MetaImage are
        gzip-compressed and store the geometry in LPS, converted from the RAS affine.
    data : numpy.ndarray
        Voxels in ``(z, y, x)`` order; extra leading axes (time, channel) are written as NIfTI
        axes 4 and beyond.
    spacing : tuple of float, optional
        Voxel size in mm in ``(z, y, x)`` order. Used to build the affine when none is given, and
        checked against it when both are.
    affine : numpy.ndarray, optional
        4x4 NIfTI-convention (RAS) voxel-to-world matrix (as :func:`read_volume` returns it for
        every format). Default: a diagonal matrix of the spacing with the origin at zero.
    is_label : bool, optional
        Mark the file as a label map (NIfTI intent ``label``; a ``xaimed_intent`` header key in
        NRRD and MetaImage). Default: True for boolean data.
    metadata : dict, optional
        JSON-serialisable provenance, written to ``<name>.json`` beside the file.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    XaimedError
        If the suffix is of no format written here, the data has fewer than 3 dimensions,
        spacing and affine disagree, or (NRRD, MetaImage) the affine's axes are not orthogonal.
    """
    path = Path(path)
    if not str(path).lower().endswith(VOLUME_SUFFIXES):
        raise XaimedError(
            f"Cannot write {path.name!r}: the suffix picks the format; NIfTI files end in .nii "
            "or .nii.gz, NRRD in .nrrd or .nhdr, MetaImage in .mha or .mhd: add one of them."
        )
    data = np.asarray(data)
    if data.ndim < 3:
        raise XaimedError(
            f"write_volume expects a 3D (z, y, x) volume, got shape {data.shape}: add the missing "
            "axis (e.g. data[np.newaxis]) before writing."
        )
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)[-3:]
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise XaimedError(
                f"spacing must be three positive numbers in (z, y, x) order, got {spacing}."
            )
    if affine is None:
        zyx = spacing if spacing is not None else (1.0, 1.0, 1.0)
        affine = np.diag([zyx[2], zyx[1], zyx[0], 1.0])
    else:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise XaimedError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}.")
        if spacing is not None:
            from_affine = tuple(np.linalg.norm(affine[:3, :3], axis=0)[::-1])
            if not np.allclose(from_affine, spacing, rtol=1e-4, atol=1e-6):
                raise XaimedError(
                    f"spacing {spacing} (z, y, x) disagrees with the affine, whose voxel size is "
                    f"{tuple(round(v, 6) for v in from_affine)}: pass one of them, or make them agree."
                )

    sidecar_text = None
    if metadata is not None:
        # before the volume is written, so bad metadata leaves no NIfTI without its JSON
        try:
            sidecar_text = json.dumps(metadata, indent=2, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise XaimedError(
                f"metadata for {path.name!r} cannot be saved as JSON ({exc}): keep to numbers, "
                "strings, lists, dicts and numpy arrays, or convert the value with str()."
            ) from exc
    label = bool(is_label or (is_label is None and data.dtype == bool))
    if is_nifti_path(path):
        written = _write_nifti(path, data, affine, label)
    else:
        from napari_xaimed.io.itk import write_itk_file

        written = write_itk_file(path, data, affine, label)
    if sidecar_text is not None:
        side = sidecar_path(path)
        side.write_text(sidecar_text)
        written.append(side)
    return written


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, is_label: bool) -> list[Path]:
    import nibabel as nib

    img = nib.Nifti1Image(np.transpose(_nifti_dtype(data)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")  # spacing and affine here are always mm
    if is_label:
        img.header.set_intent("label")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return [path]


def _nifti_dtype(data: np.ndarray) -> np.ndarray:
    """Cast to a dtype NIfTI readers everywhere accept, without losing values."""
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    if data.dtype in (np.int64, np.uint64):
        # nibabel refuses 64-bit integers by default; most label maps fit 32 bits.
        if data.size == 0:
            return data.astype(np.int32)
        lo, hi = int(data.min()), int(data.max())
        for candidate in (np.uint8, np.int16, np.uint16, np.int32, np.uint32):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return data.astype(candidate)
        raise XaimedError(
            f"Label values {lo}..{hi} do not fit in 32 bits, which NIfTI tools expect: relabel "
            "them consecutively (skimage.segmentation.relabel_sequential)."
        )
    return data


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    """Serialise provenance (numpy scalars, arrays, paths allowed) to JSON text."""
    return json.dumps(value, default=_json_default)
