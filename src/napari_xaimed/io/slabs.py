"""Slabs: reading a volume larger than memory a run of z planes at a time.

A numpy, memory-mapped, zarr or dask array is read ``read_slab(array, start, stop)`` for each
``(start, stop)`` of :func:`z_slabs`, with :func:`slab_size` planes per slab (about
:data:`SLAB_BYTES` of voxels, a multiple of the store's z chunk).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from napari_xaimed._core.arrays import is_lazy

#: Bytes of voxels read or written per slab when no slab size is given.
SLAB_BYTES = 64 * 2**20


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
