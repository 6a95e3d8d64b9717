"""NRRD and MetaImage volumes (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) through SimpleITK.

ITK images index voxels ``(i, j, k)`` = ``(x, y, z)`` like NIfTI, and SimpleITK's arrays are
already ``(z, y, x)``: the voxels need no transposition. ITK's world frame is LPS (x to the
patient's left, y posterior) where NIfTI's is RAS, so the geometry converts with
``diag(-1, -1, 1)``: :class:`~napari_xaimed.io.Volume.affine` stays the NIfTI-convention RAS
matrix whatever the file format, and the same voxel has the same world coordinates.

The functions here are called by :func:`napari_xaimed.io.read_volume` and
:func:`napari_xaimed.io.write_volume`; scripts use those.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_xaimed._core.errors import XaimedError

if TYPE_CHECKING:
    import SimpleITK as sitk

    from napari_xaimed.io.volume import Volume

# NRRD and MetaImage have no NIfTI-like intent code: this key in the header marks a label map.
INTENT_KEY = "xaimed_intent"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
ORTHOGONAL_TOLERANCE = 1e-4


def check_orthogonal(direction: np.ndarray, name: str) -> None:
    """Refuse a voxel grid whose axes are not perpendicular (a sheared grid).

    Parameters
    ----------
    direction : numpy.ndarray
        3x3 matrix whose columns are the unit directions of the voxel axes ``(i, j, k)``.
    name : str
        The file or series, for the message.

    Raises
    ------
    XaimedError
        If the columns are not orthonormal: napari layers (``scale``/``translate``) and the
        analyses here assume a rectangular grid.
    """
    gram = direction.T @ direction
    if not np.allclose(gram, np.eye(3), atol=ORTHOGONAL_TOLERANCE):
        cosines = [gram[0, 1], gram[0, 2], gram[1, 2]]
        angles = [float(np.degrees(np.arccos(np.clip(c, -1, 1)))) for c in cosines]
        raise XaimedError(
            f"{name!r} has a non-orthogonal voxel grid (angles between its axes "
            f"{', '.join(f'{a:.2f}' for a in angles)} degrees, not 90): the volume must be "
            "resampled to an orthogonal grid first (e.g. SimpleITK.Resample onto an image with an "
            "orthogonal direction, or 3D Slicer's 'Harden transform' + 'Resample')."
        )


def image_geometry(image: sitk.Image, name: str) -> tuple[tuple[float, float, float], np.ndarray]:
    """Spacing ``(z, y, x)`` in mm and the RAS voxel-to-world affine of a 3D SimpleITK image."""
    spacing_xyz = np.asarray(image.GetSpacing(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    check_orthogonal(direction, name)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing_xyz)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    spacing = (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0]))
    return spacing, affine


def set_image_geometry(image: sitk.Image, affine: np.ndarray, name: str) -> None:
    """Give a SimpleITK image the spacing, direction and origin of a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3]
    spacing_xyz = np.linalg.norm(lps[:, :3], axis=0)
    direction = lps[:, :3] / spacing_xyz
    check_orthogonal(direction, name)
    image.SetSpacing(spacing_xyz.tolist())
    image.SetDirection(direction.ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())


def volume_from_image(image: sitk.Image, path: Path, name: str) -> Volume:
    """A :class:`~napari_xaimed.io.Volume` from a SimpleITK image, in ``(z, y, x)`` order.

    A 2D image gets a z axis of one slice; a vector image (several components per voxel) puts
    the component axis first, as :func:`~napari_xaimed.io.read_volume` does for NIfTI's 4th axis.
    """
    import SimpleITK as sitk

    from napari_xaimed.io.volume import Volume, _looks_like_labels, read_sidecar

    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise XaimedError(
            f"{name!r} is a {image.GetDimension()}D image: napari-xaimed reads 2D and 3D images "
            "(with optional components per voxel); extract a 3D volume first."
        )
    spacing, affine = image_geometry(image, name)
    data = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() > 1:
        data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
    marked = image.HasMetaDataKey(INTENT_KEY) and image.GetMetaData(INTENT_KEY).strip() == "label"
    return Volume(
        data=data,
        spacing=spacing,
        affine=affine,
        is_label=bool(marked or _looks_like_labels(data, path.name)),
        metadata=read_sidecar(path),
        path=path,
    )


def read_itk_file(path: Path) -> Volume:
    """Read an NRRD or MetaImage file (see :func:`napari_xaimed.io.read_volume`)."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise XaimedError(
            f"Could not read {path.name!r} as {format_name(path)} ({first}). The file may be "
            "truncated, its data file (.raw/.zraw for .mhd and .nhdr) missing, or not an image: "
            "re-export it or check the download."
        ) from exc
    return volume_from_image(image, path, path.name)


def format_name(path: str | Path) -> str:
    """``"NRRD"`` or ``"MetaImage"`` for a file name."""
    return "NRRD" if str(path).lower().endswith((".nrrd", ".nhdr")) else "MetaImage"


def _itk_dtype(data: np.ndarray) -> np.ndarray:
    if data.dtype == bool:
        return data.astype(np.uint8)
    if data.dtype == np.float16:
        return data.astype(np.float32)
    return data


def write_itk_file(path: Path, data: np.ndarray, affine: np.ndarray, is_label: bool) -> list[Path]:
    """Write a ``(z, y, x)`` (or ``(c, z, y, x)``) volume as NRRD or MetaImage, gzip-compressed.

    Returns the files written: the one file, or the header and its data file for ``.nhdr`` and
    ``.mhd``.
    """
    import SimpleITK as sitk

    if data.ndim == 3:
        image = sitk.GetImageFromArray(_itk_dtype(data))
    elif data.ndim == 4:
        image = sitk.GetImageFromArray(np.moveaxis(_itk_dtype(data), 0, -1), isVector=True)
    else:
        raise XaimedError(
            f"{format_name(path)} export takes a (z, y, x) volume or one with a channel axis "
            f"first, got shape {data.shape}: pick the volume to save (e.g. data[0])."
        )
    set_image_geometry(image, affine, path.name)
    if is_label:
        image.SetMetaData(INTENT_KEY, "label")
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return [path, *_data_files(path)]


def _data_files(header: Path) -> list[Path]:
    """The separate data file a ``.mhd`` or ``.nhdr`` header names (none for one-file formats)."""
    if not header.name.lower().endswith((".mhd", ".nhdr")):
        return []
    key = "elementdatafile" if header.name.lower().endswith(".mhd") else "data file"
    for line in header.read_text(errors="replace").splitlines():
        name, sep, value = line.partition("=" if key == "elementdatafile" else ":")
        if sep and name.strip().lower() == key:
            return [header.with_name(value.strip())]
    return []

