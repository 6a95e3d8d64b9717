"""Zarr / OME-Zarr stores: writing an array slab by slab with its spacing and origin, and opening
one as a dask array (spacing from the OME-NGFF metadata or a ``spacing`` attribute; see
:mod:`napari_xaimed.io.lazy`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.io.slabs import read_slab, slab_size, z_slabs

ZARR_SUFFIXES = (".zarr", ".ome.zarr")


_UNIT_MM = {"millimeter": 1.0, "mm": 1.0, "micrometer": 1e-3, "micron": 1e-3, "um": 1e-3,
            "nanometer": 1e-6, "nm": 1e-6, "centimeter": 10.0, "cm": 10.0, "meter": 1e3,
            "m": 1e3}


def is_zarr_path(path: str | Path) -> bool:
    """Whether ``path`` names a Zarr store by its suffix (``.zarr``, ``.ome.zarr``)."""
    return str(path).lower().rstrip("/\\").endswith(ZARR_SUFFIXES)


def write_zarr(
    path: str | Path,
    data: Any,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    *,
    affine: np.ndarray | None = None,
    is_label: bool = False,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    slab: int | None = None,
) -> Path:
    """Write a ``(z, y, x)`` volume to an OME-Zarr image, slab by slab.

    Parameters
    ----------
    path : str or pathlib.Path
        The store to create, a folder ending in ``.zarr``.
    data : array-like
        3D voxels: numpy, a memory map, a zarr or a dask array. Read one slab of chunks at a
        time, so it may be larger than memory.
    spacing : sequence of float
        Voxel size in mm, ``(z, y, x)``.
    origin : sequence of float, optional
        World position (mm) of voxel ``(0, 0, 0)`` along the voxel axes, ``(z, y, x)``
        (napari's ``translate``); zero when omitted.
    chunks : sequence of int, optional
        Chunk shape; default ``(min(z, 64), min(y, 256), min(x, 256))``.
    affine : numpy.ndarray, optional
        The full NIfTI-convention affine, kept for oblique volumes (OME-NGFF stores scale and
        translation only); it must agree with ``spacing``.
    is_label : bool
        Mark the image as a label map (read back as :attr:`Volume.is_label`).
    metadata : dict, optional
        JSON-serialisable provenance, kept in the group's ``xaimed`` attribute.
    overwrite : bool
        Replace an existing store. By default an existing path is an error, so nothing is lost.
    slab : int, optional
        Planes read and written at a time (default: about 64 MB, a multiple of the z chunk).

    Returns
    -------
    pathlib.Path
        The store written. The voxels are array ``"0"`` of the group.

    Raises
    ------
    XaimedError
        If the path exists (without ``overwrite``), does not end in ``.zarr``, the data is not
        3D, or spacing, origin or affine are not valid.

    Examples
    --------
    >>> import numpy as np
    >>> write_zarr("ct.zarr", np.zeros((8, 16, 16), np.float32), spacing=(2.0, 0.7, 0.7))
    ... # doctest: +SKIP
    """
    shape = tuple(int(n) for n in np.shape(data))
    dtype = getattr(data, "dtype", None)
    dtype = np.asarray(data).dtype if dtype is None else np.dtype(dtype)
    array = create_zarr(path, shape, dtype, spacing, origin, chunks, affine=affine,
                        is_label=is_label, metadata=metadata, overwrite=overwrite)
    slab = int(slab) if slab else slab_size(shape, array.dtype.itemsize, array.chunks)
    for start, stop in z_slabs(shape[0], slab):
        array[start:stop] = read_slab(data, start, stop).astype(array.dtype, copy=False)
    return Path(path)


def check_new_store(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a store name that is not ``.zarr``, or one that exists unless ``overwrite``:
    checked before a long job starts, not when it comes to write."""
    path = Path(path)
    if not is_zarr_path(path):
        raise XaimedError(f"Cannot write {path.name!r} as Zarr: the store's name must end in "
                          ".zarr (e.g. 'ct.zarr').")
    if path.exists() and not overwrite:
        raise XaimedError(f"{str(path)!r} already exists: pick another path, or pass "
                          "overwrite=True to replace it.")
    return path


def create_zarr(
    path: str | Path,
    shape: Sequence[int],
    dtype: Any,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    *,
    affine: np.ndarray | None = None,
    is_label: bool = False,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
):
    """Create an empty OME-Zarr image (zeros) and return its ``zarr.Array`` to fill in slabs.

    The parameters are those of :func:`write_zarr` (which fills the array from data), with the
    ``shape`` and ``dtype`` of the voxels (bool is stored as uint8). Provenance can be added
    later with :func:`set_provenance`.
    """
    import zarr

    from napari_xaimed.io.volume import grid_translate

    path = check_new_store(path, overwrite)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise XaimedError(f"a Zarr volume must be 3D (z, y, x) and non-empty, got shape "
                          f"{shape}.")
    spacing = as_spacing(spacing)
    info: dict[str, Any] = {"is_label": bool(is_label)}
    if affine is not None:
        affine = np.asarray(affine, dtype=float)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise XaimedError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}.")
        voxel = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)[::-1])
        if not np.allclose(voxel, spacing, rtol=1e-4, atol=1e-6):
            raise XaimedError(f"spacing {spacing} (z, y, x) disagrees with the affine, whose "
                              f"voxel size is {voxel}: make them agree.")
        info["affine"] = affine.tolist()
        origin = grid_translate(affine) if origin is None else origin
    origin = as_origin(origin)
    if metadata is not None:
        info["provenance"] = _json_ready(metadata)
    chunks = tuple(int(c) for c in chunks) if chunks is not None else (
        min(shape[0], 64), min(shape[1], 256), min(shape[2], 256))
    if len(chunks) != 3 or min(chunks) < 1:
        raise XaimedError(f"chunks must be three positive sizes (z, y, x), got {chunks}.")
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    group = zarr.open_group(str(path), mode="w")
    array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    group.attrs.update({"ome": _ome_metadata(spacing, origin, path.name), "xaimed": info})
    return array


def set_provenance(path: str | Path, metadata: dict[str, Any]) -> None:
    """Keep ``metadata`` (JSON-serialisable) as the provenance of the Zarr image at ``path``."""
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    info = dict(group.attrs.get("xaimed", {}))
    info["provenance"] = _json_ready(metadata)
    group.attrs["xaimed"] = info


def _json_ready(metadata: dict[str, Any]) -> dict[str, Any]:
    from napari_xaimed.io.volume import to_json

    try:
        return json.loads(to_json(metadata))
    except (TypeError, ValueError) as exc:
        raise XaimedError(f"metadata cannot be saved as JSON ({exc}): keep to numbers, "
                          "strings, lists, dicts and numpy arrays.") from exc


def _ome_metadata(spacing: tuple[float, ...], origin: tuple[float, ...], name: str
                  ) -> dict[str, Any]:
    """OME-NGFF 0.5 ``multiscales`` of one full-resolution level in mm."""
    axes = [{"name": a, "type": "space", "unit": "millimeter"} for a in ("z", "y", "x")]
    transforms = [{"type": "scale", "scale": list(spacing)},
                  {"type": "translation", "translation": list(origin)}]
    return {"version": "0.5", "multiscales": [{
        "name": name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": transforms}]}]}


def read_zarr(path: str | Path, *, spacing: Sequence[float] | None = None,
              origin: Sequence[float] | None = None):
    """Open a Zarr array or OME-Zarr image lazily as a :class:`~napari_xaimed.io.Volume`.

    Parameters
    ----------
    path : str or pathlib.Path
        A Zarr store: an OME-Zarr image (its first multiscales level is read), a group with one
        array, or an array.
    spacing : sequence of float, optional
        Voxel size in mm, ``(z, y, x)``: overrides (or supplies) the store's.
    origin : sequence of float, optional
        World position (mm) of voxel ``(0, 0, 0)``, ``(z, y, x)``: overrides the store's.

    Returns
    -------
    Volume
        ``.data`` a :class:`dask.array.Array` over the store (nothing read yet), ``.spacing``,
        ``.affine``, ``.is_label`` and the provenance kept by :func:`write_zarr` as
        ``.metadata``.

    Raises
    ------
    XaimedError
        If there is no store at ``path``, it holds no 3D array, or no spacing is found and
        none is given (the message says how to give one).
    """
    import dask.array as da
    import zarr

    from napari_xaimed.io.volume import _LABEL_NAME, Volume, affine_from_grid, volume_stem

    path = Path(path)
    if not path.exists():
        raise XaimedError(f"No Zarr store at {str(path)!r}: check the path.")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a folder that is not a store
        raise XaimedError(f"{path.name!r} is not a readable Zarr store ({type(exc).__name__}: "
                          f"{exc}): check that it was written completely.") from exc
    attrs: dict[str, Any] = {}
    found_spacing = found_origin = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
        if multiscales:
            dataset = multiscales[0]["datasets"][0]
            array = node[dataset["path"]]
            found_spacing, found_origin = _ngff_transforms(multiscales[0], dataset)
        else:
            arrays = [name for name, _ in node.arrays()]
            if len(arrays) != 1:
                raise XaimedError(
                    f"{path.name!r} is a Zarr group with {len(arrays)} arrays and no OME-NGFF "
                    "multiscales metadata: open the array itself (e.g. 'store.zarr/0').")
            array = node[arrays[0]]
    else:
        array = node
    attrs = {**dict(array.attrs), **attrs}
    if array.ndim != 3:
        raise XaimedError(f"{path.name!r} holds a {array.ndim}D array of shape {array.shape}: "
                          "expected a 3D (z, y, x) volume.")
    if found_spacing is None and "spacing" in attrs:
        found_spacing = attrs["spacing"]
        found_origin = attrs.get("origin")
    if spacing is None and found_spacing is None:
        raise XaimedError(
            f"{path.name!r} does not say its voxel spacing (no OME-NGFF scale, no 'spacing' "
            "attribute), and every size in mm depends on it: pass spacing=(z, y, x) in mm, e.g. "
            f"read_volume({str(path)!r}, spacing=(1.0, 0.7, 0.7)), or write the store with "
            "napari_xaimed.io.lazy.write_zarr(path, data, spacing=...). Nothing was changed.")
    used_spacing = as_spacing(spacing if spacing is not None else found_spacing)
    used_origin = as_origin(origin if origin is not None else found_origin)
    info = attrs.get("xaimed", {})
    template = np.asarray(info["affine"]) if "affine" in info else None
    affine = affine_from_grid(used_spacing, used_origin, template)
    is_label = bool(info.get("is_label", False) or "image-label" in attrs
                    or _LABEL_NAME.search(volume_stem(path.name).lower()))
    data = da.from_zarr(array)
    return Volume(data=data, spacing=used_spacing, affine=affine, is_label=is_label,
                  metadata=dict(info.get("provenance", {})), path=path)


def _ngff_transforms(multiscale: dict[str, Any], dataset: dict[str, Any]
                     ) -> tuple[list[float] | None, list[float] | None]:
    """Spacing and origin (mm, the last three axes) of one OME-NGFF dataset."""
    def pick(transforms: list[dict[str, Any]], kind: str) -> list[float] | None:
        found = next((t[kind] for t in transforms if t.get("type") == kind), None)
        return None if found is None else [float(v) for v in found]

    own = list(dataset.get("coordinateTransformations", []))
    scale, shift = pick(own, "scale"), pick(own, "translation")
    if scale is None:
        return None, None
    # transformations of the whole multiscale apply after the dataset's own
    outer = list(multiscale.get("coordinateTransformations", []))
    outer_scale, outer_shift = pick(outer, "scale"), pick(outer, "translation")
    if outer_scale is not None:
        scale = [s * o for s, o in zip(scale, outer_scale, strict=True)]
        shift = None if shift is None else [s * o for s, o in zip(shift, outer_scale,
                                                                     strict=True)]
    if outer_shift is not None:
        shift = [(0.0 if shift is None else shift[i]) + o for i, o in enumerate(outer_shift)]
    axes = multiscale.get("axes") or [{}] * len(scale)
    factors = []
    for axis in axes[-3:]:
        unit = axis.get("unit", "millimeter") if isinstance(axis, dict) else "millimeter"
        if unit not in _UNIT_MM:
            raise XaimedError(f"the OME-NGFF axis unit {unit!r} is not a length this package "
                              f"converts to mm (known: {', '.join(sorted(_UNIT_MM))}): pass "
                              "spacing= in mm.")
        factors.append(_UNIT_MM[unit])
    spacing = [float(s) * f for s, f in zip(scale[-3:], factors, strict=True)]
    origin = (None if shift is None
              else [float(s) * f for s, f in zip(shift[-3:], factors, strict=True)])
    return spacing, origin
