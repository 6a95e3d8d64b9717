"""Reading and writing any supported format: :func:`read_volume` and :func:`write_volume` pick
the format from the suffix (a folder is DICOM) and, for ``lazy=True``, the Zarr/Dask path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.nifti import _read_nifti, _write_nifti
from napari_xaimed.io.volume import (
    ITK_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    _json_default,
    is_nifti_path,
    sidecar_path,
)


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
            return _named(read_nifti_lazy(path, spacing=spacing), path)
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

        return _named(read_itk_file(path), path)
    if not is_nifti_path(path):
        raise _unknown_format(path)
    return _named(_read_nifti(path), path)


def _named(volume: Volume, path: Path) -> Volume:
    """A ``<stem>.labels.json`` beside the file names its label values and marks it a label
    map (:mod:`napari_xaimed.io.label_names`)."""
    from napari_xaimed.io.label_names import sidecar_names

    names = sidecar_names(path)
    if names:
        volume.label_names = {**names, **(volume.label_names or {})}
        volume.is_label = True
    return volume


def _unknown_format(path: Path) -> XaimedError:
    return XaimedError(
        f"{path.name!r} is not a NIfTI, NRRD, MetaImage or DICOM file: expected one of "
        f"{', '.join(VOLUME_SUFFIXES)}, a DICOM file, or a folder of DICOM files.")


def _is_dicom(path: Path) -> bool:
    from napari_xaimed.io.dicom import is_dicom_file

    return is_dicom_file(path)


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


def is_volume_path(path: str | Path) -> bool:
    """Whether :func:`read_volume` reads ``path``: a file of a known suffix, a DICOM file, or a
    folder of DICOM files."""
    from napari_xaimed.io.dicom import is_dicom_file, is_dicom_folder
    from napari_xaimed.io.lazy import is_zarr_path

    return (str(path).lower().endswith(VOLUME_SUFFIXES) or is_zarr_path(path)
            or is_dicom_folder(path) or is_dicom_file(path))
