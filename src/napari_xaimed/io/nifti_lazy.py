"""A NIfTI file's voxels as a dask array without loading them: an uncompressed ``.nii`` through
a memory map, a ``.nii.gz`` one slab at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.io.slabs import slab_size

#: NIfTI files larger than this open lazily in the napari reader.
LAZY_NIFTI_BYTES = 2**30


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
