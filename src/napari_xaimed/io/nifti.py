"""NIfTI through nibabel: axes reversed to ``(z, y, x)``, lengths converted to mm, labels marked
with the NIfTI label intent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.volume import Volume, _looks_like_labels, read_sidecar


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
    zooms = nifti_zooms_mm(img.header)
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
        display_range=nifti_display_range(img.header),
    )


def nifti_display_range(header: Any) -> tuple[float, float] | None:
    """``(cal_min, cal_max)`` of a NIfTI header, the range its writer asks to display; None
    when unset (both 0, the default) or not a range (``cal_max <= cal_min``, non-finite)."""
    try:
        low, high = float(header["cal_min"]), float(header["cal_max"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        return None
    return low, high


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


def nifti_zooms_mm(header: Any) -> list[float]:
    """The voxel sizes of a NIfTI header in its axis order ``(x, y, z, ...)``, the spatial
    three in mm (:func:`nifti_mm_per_unit`) and any further ones (time) as stored."""
    to_mm = nifti_mm_per_unit(header)
    zooms = [float(z) for z in header.get_zooms()]
    return [z * to_mm for z in zooms[:3]] + zooms[3:]


def nifti_affine_mm(img: Any) -> np.ndarray:
    """The voxel-to-world affine of a nibabel NIfTI image with world coordinates in mm: the
    stored affine with its rows scaled by :func:`nifti_mm_per_unit` (voxel size and origin)."""
    affine = np.asarray(img.affine, dtype=float).copy()
    affine[:3] *= nifti_mm_per_unit(img.header)
    return affine


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
