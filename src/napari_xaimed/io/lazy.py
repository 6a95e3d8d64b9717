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

from napari_xaimed._core.arrays import is_lazy  # noqa: F401 - also importable from here, as before
from napari_xaimed.io.nifti_lazy import (  # noqa: F401 - also importable from here, as before
    LAZY_NIFTI_BYTES,
    read_nifti_lazy,
)
from napari_xaimed.io.slabs import (  # noqa: F401 - also importable from here, as before
    SLAB_BYTES,
    chunks_of,
    read_slab,
    slab_size,
    z_slabs,
)
from napari_xaimed.io.zarr_store import (  # noqa: F401 - also importable from here, as before
    ZARR_SUFFIXES,
    check_new_store,
    create_zarr,
    is_zarr_path,
    read_zarr,
    set_provenance,
    write_zarr,
)


