"""npe2 reader contributions: volumes open as Image or Labels layers placed in mm.

NIfTI, NRRD and MetaImage files, DICOM series (a folder, or a file of one) and Zarr stores.
A Zarr store, and a NIfTI file whose voxels take more than
:data:`~napari_xaimed.io.lazy.LAZY_NIFTI_BYTES` (1 GiB), open lazily: the layer holds a dask
array and napari reads only the slices it shows. Every layer gets
``scale`` = spacing and ``translate`` = the world position of voxel ``(0, 0, 0)`` along the voxel
axes (see :mod:`napari_xaimed.io`), so the same volume lands at the same place whatever its
format. A DICOM folder with several series opens every series as its own layer, largest first,
named ``"<folder> [<series description>]"`` (``series <number>`` when it has no description,
with its modality added where two would read the same); a series that cannot be read (missing
slices) is reported in a warning and the others still open. A DICOM-SEG opens as a Labels
layer whose ``features`` table (``index``, ``name``) and ``metadata["segments"]`` name its
segments; an enhanced multi-frame file opens as one volume.

Layers lie in patient coordinates with the file's direction cosines as ``affine``, and napari's
current viewer shows them in radiological convention with orientation letters
(:mod:`napari_xaimed.viewer.orientation`). An image opens with the contrast its file asks for
(DICOM window, NIfTI ``cal_min``/``cal_max``), a CT without one in the soft-tissue window,
anything else at its 0.5-99.5 percentiles (:mod:`napari_xaimed.io.contrast`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed.io import Volume, is_nifti_path, is_volume_path, read_volume, volume_stem
from napari_xaimed.io.contrast import default_range
from napari_xaimed.io.lazy import LAZY_NIFTI_BYTES, is_lazy, is_zarr_path
from napari_xaimed.viewer.layers import LayerTuple, _sample, image_layer, labels_layer
from napari_xaimed.viewer.orientation import display_current_viewer, layer_affine


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerTuple]] | None:
    """Return the reader when every path is a volume this package reads, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_volume_path(p) for p in paths):
        return None
    return read_volumes


def layer_name(path: str | Path) -> str:
    """The file name without its volume suffix, like napari names other files."""
    return volume_stem(path)


def volume_layer(volume: Volume, name: str, **source: Any) -> LayerTuple:
    """The layer of a volume: Labels for label maps, Image otherwise, placed in mm.

    The file's affine (RAS, NIfTI convention) and where it came from ride along in
    ``metadata["nifti"]`` so writing the layer back restores the orientation. Named label
    values (:attr:`Volume.label_names`, the segments of a DICOM-SEG) become the Labels
    layer's ``features`` (``index`` = label value, ``name``; row 0 the background), shown on
    hover and in feature tables, and ``metadata["segments"]``. The layer's ``affine`` holds
    the file's direction cosines (world = patient coordinates); an image's contrast is chosen by
    :func:`napari_xaimed.io.contrast.default_range`, and the file's own range and modality are
    kept in ``metadata["display"]`` for the display dock.
    """
    volume, ornt = axes_like_patient(volume)
    extra: dict[str, Any] = {
        "nifti": {"path": str(volume.path), "affine": volume.affine.tolist(), **source}}
    if ornt is not None:
        extra["nifti"]["orientation"] = ornt.tolist()
    kwargs: dict[str, Any] = {"affine": layer_affine(volume.affine, volume.data.ndim)}
    if not volume.is_label:
        sample = _sample(volume.data) if is_lazy(volume.data) else volume.data
        limits, origin = default_range(sample, volume.display_range, volume.modality)
        kwargs["contrast_limits"] = limits
        extra["display"] = {"file_range": volume.display_range, "modality": volume.modality,
                            "contrast": origin}
    if volume.is_label and volume.label_names:
        values = sorted(volume.label_names)
        extra["segments"] = {value: volume.label_names[value] for value in values}
        kwargs["features"] = {"index": [0, *values],
                              "name": ["background", *(volume.label_names[v] for v in values)]}
    make = labels_layer if volume.is_label else image_layer
    return make(
        volume.data,
        name,
        volume.spacing,
        translate=volume.translate,
        provenance=volume.metadata or None,
        metadata=extra,
        **kwargs,
    )


def axes_like_patient(volume: Volume) -> tuple[Volume, np.ndarray | None]:
    """``volume`` with its voxel axes permuted (a view, no flip, no resampling) so that each
    lies nearest the world axis of its index, ``(z, y, x)`` ~ ``(S, A, R)``, and the nibabel
    orientation transform used (None when already so).

    napari draws a 2D slice on the layer's own axes of the displayed indices, so a volume stored
    sagittally (its first axis along R) would otherwise show no axial plane. The affine follows
    (columns permuted), so every voxel keeps its world position; the writer puts the file's axis
    order back (``metadata["nifti"]["orientation"]``).
    """
    from dataclasses import replace

    from nibabel.orientations import io_orientation

    if volume.data.ndim < 3:
        return volume, None
    targets = io_orientation(np.asarray(volume.affine, dtype=float))[:, 0]
    if np.any(np.isnan(targets)) or np.array_equal(targets, [0, 1, 2]):
        return volume, None
    order = [int(a) for a in np.argsort(targets)]  # new (i, j, k) axis n = old axis order[n]
    zyx = [2 - order[2 - m] for m in range(3)]  # new (z, y, x) axis m = old axis zyx[m]
    extra = volume.data.ndim - 3  # leading channel or time axes stay first
    data = volume.data.transpose(*range(extra), *(extra + a for a in zyx))
    affine = np.asarray(volume.affine, dtype=float).copy()
    affine[:, :3] = affine[:, order]
    spacing = tuple(float(volume.spacing[a]) for a in zyx)
    ornt = np.column_stack([targets, np.ones(3)])
    return replace(volume, data=data, spacing=spacing, affine=affine), ornt


def read_volumes(path: str | list[str]) -> list[LayerTuple]:
    """Read one or several volume files or DICOM folders into layer data tuples."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    display_current_viewer()
    layers = []
    for p in paths:
        if is_zarr_path(p):
            layers.append(volume_layer(read_volume(p), layer_name(p), format="zarr"))
        elif Path(p).is_dir():
            layers.extend(_dicom_layers(Path(p)))
        else:
            volume = read_volume(p, lazy=_large_nifti(p))
            kind = _format(volume)
            # one .dcm file opens its whole series, named after the series' folder (a
            # multi-frame or SEG file is a volume of its own, named after the file)
            name = layer_name(p)
            if kind == "dicom":
                whole = volume.path is not None and volume.path.is_dir()
                name = Path(p).resolve().parent.name if whole else _dicom_stem(Path(p))
            layers.append(volume_layer(volume, name, format=kind))
    return layers


def _dicom_stem(path: Path) -> str:
    """``liver.dcm`` -> ``liver``; a DICOM file without a DICOM suffix keeps its name."""
    from napari_xaimed.io.dicom import DICOM_SUFFIXES

    return path.stem if path.suffix.lower() in DICOM_SUFFIXES else path.name


def _large_nifti(path: str | Path) -> bool:
    """Whether ``path`` is a 3D NIfTI file whose voxels exceed ``LAZY_NIFTI_BYTES``."""
    if not is_nifti_path(path):
        return False
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception:  # noqa: BLE001 - the in-memory reader reports the problem
        return False
    voxels = int(np.prod(img.shape)) * np.dtype(img.get_data_dtype()).itemsize
    return len(img.shape) == 3 and voxels > LAZY_NIFTI_BYTES


def _format(volume: Volume) -> str:
    name = str(volume.path).lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return "metaimage" if name.endswith((".mha", ".mhd")) else "dicom"


def _dicom_layers(folder: Path) -> list[LayerTuple]:
    """One layer per readable series of a DICOM folder; refused series become warnings."""
    from napari_xaimed._core.errors import XaimedError
    from napari_xaimed.io.dicom import read_all_series, series_titles

    results = read_all_series(folder)
    name = folder.resolve().name
    titles = series_titles([series for series, _ in results])
    layers = []
    for (series, outcome), label in zip(results, titles, strict=True):
        if isinstance(outcome, XaimedError):
            if len(results) == 1:
                raise outcome
            warnings.warn(f"Not opened: {outcome}", stacklevel=2)
            continue
        title = name if len(results) == 1 else f"{name} [{label}]"
        layers.append(volume_layer(outcome, title, format="dicom", series=series.uid))
    if not layers:
        raise XaimedError(
            f"No series of {str(folder)!r} could be opened; the first refusal: "
            f"{results[0][1]}")
    return layers
