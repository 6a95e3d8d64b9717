"""Statistics of a volume read one slab of planes at a time (value range, histogram), for
volumes larger than memory; segmentation, attribution and the models' scaling share them."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed.io.lazy import chunks_of, read_slab, slab_size, z_slabs

#: Bytes of input voxels per slab by default (the temporaries are a few times this).
SLAB_BYTES = 32 * 2**20


def _check_3d(volume: Any, name: str = "volume") -> tuple[int, int, int]:
    shape = tuple(int(n) for n in volume.shape)
    if len(shape) != 3:
        raise XaimedError(f"{name} must be a 3D (z, y, x) volume, got shape {shape}.")
    if min(shape) < 1:
        raise XaimedError(f"{name} is empty (shape {shape}).")
    dtype = np.dtype(volume.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
        raise XaimedError(f"{name} must be numeric, got dtype {dtype}.")
    return shape  # type: ignore[return-value]


def _planes(volume: Any, slab: int | None) -> int:
    shape = tuple(volume.shape)
    if slab is not None:
        if int(slab) < 1:
            raise XaimedError(f"slab must be a positive number of planes, got {slab}.")
        return int(min(int(slab), shape[0]))
    return slab_size(shape, np.dtype(volume.dtype).itemsize, chunks_of(volume), SLAB_BYTES)


def value_range(volume: Any, slab: int | None = None) -> tuple[Any, Any]:
    """Smallest and largest value of a volume, one slab at a time (as numpy scalars of the
    volume's dtype, as ``volume.min()`` and ``volume.max()`` give them).

    Raises
    ------
    XaimedError
        If the volume holds NaN or infinite values.
    """
    return run_steps(_value_range_steps(volume, slab))


def _value_range_steps(volume: Any, slab: int | None) -> Steps[tuple[Any, Any]]:
    shape = _check_3d(volume)
    planes = _planes(volume, slab)
    lo = hi = None
    bad = 0
    for start, stop in z_slabs(shape[0], planes):
        block = read_slab(volume, start, stop)
        yield Progress(stop, shape[0], f"value range: planes {start}-{stop - 1}")
        if np.issubdtype(block.dtype, np.floating):
            finite = np.isfinite(block)
            if not finite.all():
                bad += int(block.size - np.count_nonzero(finite))
                continue
        b_lo, b_hi = block.min(), block.max()
        lo = b_lo if lo is None or b_lo < lo else lo
        hi = b_hi if hi is None or b_hi > hi else hi
    if bad:
        raise XaimedError(f"volume contains {bad} NaN or infinite voxels: replace them (e.g. "
                          "np.nan_to_num, slab by slab) or mask them out first.")
    return lo, hi


def histogram_lazy(volume: Any, nbins: int = 256, slab: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The histogram scikit-image's Otsu thresholds use, accumulated slab by slab.

    The same counts and bin centres as ``skimage.exposure.histogram(volume.ravel(), nbins,
    source_range="image")`` on the whole volume: for floats ``nbins`` bins between the
    volume's minimum and maximum (numpy's edges, with that dtype), for integers one bin per
    value between them (``nbins`` ignored, as scikit-image does).

    Parameters
    ----------
    volume : array-like
        3D volume: numpy, memory map, zarr or dask array.
    nbins : int
    slab : int, optional
        Planes per slab (default: about 32 MB of voxels, a multiple of the z chunk).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Counts (int64) and bin centres.
    """
    return run_steps(_histogram_steps(volume, nbins, slab))


def _histogram_steps(volume: Any, nbins: int, slab: int | None
                     ) -> Steps[tuple[np.ndarray, np.ndarray]]:
    """:func:`histogram_lazy` with a step per slab read (two passes: range, counts)."""
    lo, hi = yield from within(_value_range_steps(volume, slab), 0, 2)
    planes = _planes(volume, slab)
    integer = np.issubdtype(np.dtype(volume.dtype), np.integer)
    if integer:
        lo_i, hi_i = int(lo), int(hi)
        counts = np.zeros(hi_i - lo_i + 1, np.int64)
        centers = np.arange(lo_i, hi_i + 1)
    else:
        counts = np.zeros(int(nbins), np.int64)
        centers = None
    depth = volume.shape[0]
    for start, stop in z_slabs(depth, planes):
        block = read_slab(volume, start, stop)
        yield Progress(depth + stop, 2 * depth, f"histogram: planes {start}-{stop - 1}")
        if integer:
            counts += np.bincount((block.astype(np.int64).ravel() - lo_i),
                                  minlength=counts.size)
        else:
            found, edges = np.histogram(block, bins=int(nbins), range=(lo, hi))
            counts += found
            if centers is None:
                centers = (edges[:-1] + edges[1:]) / 2.0
    return counts, centers  # type: ignore[return-value]
