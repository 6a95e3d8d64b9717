"""Read and write NIfTI volumes (``.nii``, ``.nii.gz``) in numpy's axis order.

NIfTI stores voxels as ``(x, y, z[, t, ...])``; napari and numpy index ``(z, y, x)``. Reading
reverses the axes (so a 4D ``(x, y, z, t)`` file becomes ``(t, z, y, x)``: the extra axis first),
and writing reverses them back, so a read-then-write round trip keeps voxels, spacing and affine.

The affine is kept exactly as the file has it (the NIfTI voxel-to-world matrix, voxel indices in
the file's ``(i, j, k)`` order): napari shows the volume with ``scale=spacing`` only, and the
orientation travels in the layer metadata so that writing the layer back restores it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._errors import XaimedError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NIFTI_INTENT_LABEL = 1002
# Filenames that say "this is a segmentation", as written by common tools (nnU-Net, FreeSurfer,
# ITK-SNAP, 3D Slicer).
_LABEL_NAME = re.compile(r"(^|[^a-z])(seg|segmentation|label|labels|mask|parc|aseg|gt|truth)([^a-z]|$)")


@dataclass
class Volume:
    """A volume read from disk.

    Attributes
    ----------
    data : numpy.ndarray
        Voxels in ``(z, y, x)`` order; extra NIfTI axes (time, channel) come first.
    spacing : tuple of float
        Voxel size in millimetres in ``(z, y, x)`` order.
    affine : numpy.ndarray
        The file's 4x4 voxel-to-world matrix (NIfTI convention, voxel index order ``(i, j, k)`` =
        ``(x, y, z)``).
    is_label : bool
        Whether the file holds a label map (integer classes or instances) rather than intensities.
    metadata : dict
        The JSON sidecar written beside the file (provenance), empty when there is none.
    path : pathlib.Path or None
        Where the volume was read from.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    is_label: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def is_nifti_path(path: str | Path) -> bool:
    """Return whether ``path`` names a NIfTI file by its extension."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def sidecar_path(path: str | Path) -> Path:
    """The JSON provenance file that belongs to a NIfTI file: ``ct.nii.gz`` -> ``ct.json``."""
    path = Path(path)
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".json")


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI file into ``(z, y, x)`` order with its spacing and affine.

    Parameters
    ----------
    path : str or pathlib.Path
        A ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    Volume
        ``.data`` in ``(z, y, x)`` (extra axes first), ``.spacing`` in mm in the same order,
        ``.affine`` as stored in the file, ``.is_label`` and the JSON sidecar as ``.metadata``.

    Raises
    ------
    XaimedError
        If the file does not exist, is not NIfTI, or cannot be decoded (truncated or corrupt).
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise XaimedError(f"{path.name!r} is not a NIfTI file: expected a .nii or .nii.gz file.")
    if not path.is_file():
        raise XaimedError(f"No file at {str(path)!r}: check the path.")
    try:
        img = nib.load(str(path))
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files (EOFError, zlib, ...)
        raise XaimedError(
            f"Could not read {path.name!r} as NIfTI ({type(exc).__name__}: {exc}). The file may be "
            "truncated or not a NIfTI image: re-export it or check the download."
        ) from exc

    zooms = [float(z) for z in img.header.get_zooms()]
    if raw.ndim < 2:
        raise XaimedError(f"{path.name!r} holds a {raw.ndim}D array: expected an image volume.")
    if raw.ndim == 2:  # a single slice: give it a z axis so it stays a volume
        raw = raw[:, :, np.newaxis]
        zooms = zooms[:2] + [1.0]
    spatial = zooms[:3] if len(zooms) >= 3 else zooms + [1.0] * (3 - len(zooms))
    spacing = tuple(z if z > 0 else 1.0 for z in reversed(spatial))

    data = np.ascontiguousarray(np.transpose(raw))
    intent = img.header.get_intent()[0] if hasattr(img.header, "get_intent") else ""
    metadata: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            metadata = json.loads(side.read_text())
        except json.JSONDecodeError as exc:
            raise XaimedError(
                f"The provenance file {side.name!r} beside {path.name!r} is not valid JSON ({exc}): "
                "fix or remove it."
            ) from exc
    is_label = intent == "label" or _looks_like_labels(data, path.name)
    return Volume(
        data=data,
        spacing=spacing,  # type: ignore[arg-type]
        affine=np.asarray(img.affine, dtype=float),
        is_label=bool(is_label),
        metadata=metadata,
        path=path,
    )


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
    stem = name.lower()
    if _LABEL_NAME.search(stem.replace(".nii.gz", "").replace(".nii", "")):
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
    """Write a ``(z, y, x)`` volume to NIfTI, and its provenance to a JSON file beside it.

    Parameters
    ----------
    path : str or pathlib.Path
        Target ``.nii`` or ``.nii.gz`` file.
    data : numpy.ndarray
        Voxels in ``(z, y, x)`` order; extra leading axes (time, channel) are written as NIfTI
        axes 4 and beyond.
    spacing : tuple of float, optional
        Voxel size in mm in ``(z, y, x)`` order. Used to build the affine when none is given, and
        checked against it when both are.
    affine : numpy.ndarray, optional
        4x4 NIfTI voxel-to-world matrix (as :func:`read_volume` returns it). Default: a diagonal
        matrix of the spacing with the origin at zero.
    is_label : bool, optional
        Mark the file as a label map (NIfTI intent ``label``). Default: True for boolean data.
    metadata : dict, optional
        JSON-serialisable provenance, written to ``<name>.json`` beside the file.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    XaimedError
        If the path is not NIfTI, the data has fewer than 3 dimensions, or spacing and affine
        disagree.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise XaimedError(
            f"Cannot write {path.name!r}: NIfTI files end in .nii or .nii.gz; add one of them."
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
    out = _nifti_dtype(data)
    img = nib.Nifti1Image(np.transpose(out), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if is_label or (is_label is None and data.dtype == bool):
        img.header.set_intent("label")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    written = [path]
    if sidecar_text is not None:
        side = sidecar_path(path)
        side.write_text(sidecar_text)
        written.append(side)
    return written


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
