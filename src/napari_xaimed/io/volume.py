"""The :class:`Volume` (voxels in numpy's ``(z, y, x)`` order with the NIfTI-convention affine),
its grid helpers, the file-name rules (suffixes, stems, label names) and JSON sidecars."""

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
    display_range : tuple of float or None
        The intensity range ``(low, high)`` the file asks to be displayed with: the DICOM
        window (WindowCenter/WindowWidth, (0028,1050)/(0028,1051), the first one when several)
        as centre -/+ width/2, or NIfTI ``cal_min``/``cal_max`` when set; None when the file
        gives none. See :mod:`napari_xaimed.io.contrast`.
    modality : str
        The DICOM Modality (0008,0060) (``CT``, ``MR``...), empty for other formats.
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    is_label: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    display_range: tuple[float, float] | None = None
    modality: str = ""

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
