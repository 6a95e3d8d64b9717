"""Volumes larger than memory: Zarr / OME-Zarr and memory-mapped NIfTI as dask arrays.

Nothing here reads a whole volume. :func:`read_zarr` opens a Zarr array or an OME-Zarr image
(its first, full-resolution level) as a :class:`dask.array.Array`; :func:`read_nifti_lazy`
wraps a NIfTI file's voxels the same way without loading them (an uncompressed ``.nii`` is
read through a memory map, a ``.nii.gz`` one slab at a time). :func:`write_zarr` writes an
array (numpy, dask, zarr or a memory map) slab by slab with OME-NGFF metadata, so the spacing
and origin travel with it. :func:`~napari_xaimed.io.read_volume` dispatches here for ``.zarr``
paths and for ``lazy=True``.

Axis order and world frame are those of :mod:`napari_xaimed.io`: data ``(z, y, x)``, spacing
and origin in mm in the same order, :attr:`~napari_xaimed.io.Volume.affine` the NIfTI-
convention (RAS) voxel-to-world matrix.

**Spacing of a Zarr.** Read, in this order, from the OME-NGFF ``multiscales`` metadata (the
``scale`` (and ``translation``) ``coordinateTransformations`` of the first dataset, with the
axes' units converted to mm; version 0.4 in the group's attributes, 0.5 under ``"ome"``), or
from a ``spacing`` attribute of the array or its group (``origin`` likewise). A Zarr with
neither raises an :class:`~napari_xaimed.XaimedError` saying to pass ``spacing=`` or to write
the store with :func:`write_zarr`: a guessed 1 mm would put every size in mm (minimum lesion
size, distances) silently wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.arrays import is_lazy
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_origin, as_spacing

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
#: Bytes of voxels read or written per slab when no slab size is given.
SLAB_BYTES = 64 * 2**20
#: NIfTI files larger than this open lazily in the napari reader.
LAZY_NIFTI_BYTES = 2**30
_UNIT_MM = {"millimeter": 1.0, "mm": 1.0, "micrometer": 1e-3, "micron": 1e-3, "um": 1e-3,
            "nanometer": 1e-6, "nm": 1e-6, "centimeter": 10.0, "cm": 10.0, "meter": 1e3,
            "m": 1e3}


def is_zarr_path(path: str | Path) -> bool:
    """Whether ``path`` names a Zarr store by its suffix (``.zarr``, ``.ome.zarr``)."""
    return str(path).lower().rstrip("/\\").endswith(ZARR_SUFFIXES)


def slab_size(shape: Sequence[int], itemsize: int, chunks: Sequence[int] | None = None,
              budget: int = SLAB_BYTES) -> int:
    """Planes per slab: about ``budget`` bytes of voxels, a multiple of the z chunk if any."""
    plane = int(np.prod(shape[1:])) * int(itemsize)
    planes = max(1, budget // max(plane, 1))
    if chunks:
        step = int(chunks[0])
        planes = max(step, planes // step * step)
    return int(min(planes, shape[0]))


def z_slabs(depth: int, slab: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive slabs of ``slab`` planes covering ``0..depth`` (at
    least one plane each: the ``slab_size`` of an empty volume, 0, gives no slab).

    ``slice(start, stop)`` of each, for numpy indexing, is ``itertools.starmap(slice, ...)``.
    """
    slab = max(1, int(slab))
    for start in range(0, depth, slab):
        yield start, min(start + slab, depth)


def chunks_of(array: Any) -> tuple[int, ...] | None:
    """The chunk shape of a dask or zarr array (first chunk per axis), None for numpy."""
    chunks = getattr(array, "chunks", None)
    if chunks is None:
        return None
    if chunks and isinstance(chunks[0], tuple):  # dask: a tuple of chunk sizes per axis
        return tuple(int(c[0]) for c in chunks)
    return tuple(int(c) for c in chunks)


def read_slab(array: Any, start: int, stop: int) -> np.ndarray:
    """Planes ``start:stop`` of a numpy, memory-mapped, zarr or dask array, in memory."""
    block = array[start:stop]
    if is_lazy(block):
        block = block.compute()
    return np.asarray(block)


# -- Zarr -------------------------------------------------------------------------------------

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


# -- NIfTI ------------------------------------------------------------------------------------

class _ZYXProxy:
    """A NIfTI file's voxels in ``(z, y, x)`` order, read on indexing only.

    Wraps nibabel's array proxy (``img.dataobj``: a memory map for an uncompressed file, scaled
    by the header's slope and intercept), so dask reads a slab by asking for it.
    """

    def __init__(self, dataobj: Any):
        self.dataobj = dataobj
        self.shape = tuple(int(n) for n in reversed(dataobj.shape))
        self.dtype = np.dtype(dataobj.dtype)
        self.ndim = 3

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        return np.asarray(self.dataobj[key[::-1]]).T


def _memory_map(img: Any) -> np.memmap | None:
    """The voxels of an uncompressed, unscaled NIfTI file as a read-only memory map, else
    None (scaled or compressed files go through nibabel's proxy, a slab at a time)."""
    dataobj = img.dataobj
    slope, inter = getattr(dataobj, "slope", 1.0), getattr(dataobj, "inter", 0.0)
    if not (slope == 1.0 and inter == 0.0 and hasattr(dataobj, "get_unscaled")):
        return None
    try:
        raw = dataobj.get_unscaled()  # a memmap when the file is uncompressed (mmap=True)
    except Exception:  # noqa: BLE001 - any failure: read through the proxy instead
        return None
    return raw if isinstance(raw, np.memmap) else None


def read_nifti_lazy(path: str | Path, *, spacing: Sequence[float] | None = None):
    """Open a 3D NIfTI file lazily: a :class:`~napari_xaimed.io.Volume` over a dask array.

    The header is read now (spacing and affine converted to mm from its spatial unit, as
    :func:`~napari_xaimed.io.nifti_mm_per_unit` says); voxels only when a slab of the dask
    array is computed: through a
    read-only memory map for an uncompressed, unscaled ``.nii``; otherwise through nibabel's
    array proxy, which reads (a ``.nii.gz``: decompresses up to) the slab asked for and applies
    the header's scaling. The header's ``cal_min``/``cal_max`` become the volume's
    ``display_range``, as for a file read in memory.

    Parameters
    ----------
    path : str or pathlib.Path
    spacing : sequence of float, optional
        Overrides the header's voxel size (mm, ``(z, y, x)``).

    Returns
    -------
    Volume

    Raises
    ------
    XaimedError
        If the file cannot be read as NIfTI or is not 3D.
    """
    import dask.array as da
    import nibabel as nib

    from napari_xaimed.io.nifti import nifti_affine_mm, nifti_display_range, nifti_zooms_mm
    from napari_xaimed.io.volume import _LABEL_NAME, Volume, read_sidecar, volume_stem

    path = Path(path)
    try:
        img = nib.load(str(path), mmap=True)
    except Exception as exc:  # nibabel raises many types for broken files
        raise XaimedError(f"Could not read {path.name!r} as NIfTI ({type(exc).__name__}: "
                          f"{exc}): re-export it or check the download.") from exc
    if len(img.shape) != 3:
        raise XaimedError(f"{path.name!r} holds a {len(img.shape)}D image of shape "
                          f"{img.shape}: lazy reading takes 3D volumes; read it with "
                          "lazy=False, or split it into 3D files.")
    proxy: Any = _ZYXProxy(img.dataobj)
    mapped = _memory_map(img)
    if mapped is not None:  # the file's (x, y, z) Fortran-order voxels seen as C-order (z, y, x)
        proxy = mapped.T
    zooms = nifti_zooms_mm(img.header)[:3]  # micron and meter files read in mm too
    header_spacing = tuple(z if z > 0 else 1.0 for z in reversed(zooms))
    used = as_spacing(spacing if spacing is not None else header_spacing)
    slab = slab_size(proxy.shape, proxy.dtype.itemsize)
    data = da.from_array(proxy, chunks=(slab, *proxy.shape[1:]), asarray=True,
                         name=f"nifti-{path.name}-{path.stat().st_mtime_ns}", fancy=False)
    intent = img.header.get_intent()[0] if hasattr(img.header, "get_intent") else ""
    is_label = intent == "label" or bool(
        np.issubdtype(proxy.dtype, np.integer)
        and _LABEL_NAME.search(volume_stem(path.name).lower()))
    affine = nifti_affine_mm(img)
    if spacing is not None:  # the header's orientation, scaled to the given voxel size
        axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        affine[:3, :3] = axes @ np.diag(used[::-1])
    return Volume(data=data, spacing=used, affine=affine, is_label=is_label,
                  metadata=read_sidecar(path), path=path,
                  display_range=nifti_display_range(img.header))
