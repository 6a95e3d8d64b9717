"""Connected components of a volume larger than memory, slab by slab: each slab is labelled in
memory, the labels that touch across slab borders are joined (a union-find over the boundary
pairs), and the final labels are written to a Zarr store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing
from napari_xaimed.io.lazy import create_zarr, read_slab, z_slabs
from napari_xaimed.io.slab_stats import _check_3d, _planes

_LABEL_DTYPE = np.uint32


_RANK = {6: 1, 18: 2, 26: 3}


def _boundary_pairs(above: np.ndarray, below: np.ndarray, connectivity: int,
                    values: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """``(n, 2)`` pairs of labels (nonzero) that touch across two consecutive planes; with
    ``values`` (the two planes' label values) only where the values are equal."""
    if connectivity == 6:
        shifts = [(0, 0)]
    elif connectivity == 18:
        shifts = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    else:
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    ny, nx = above.shape
    found = []
    for dy, dx in shifts:
        a = above[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
        b = below[max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)]
        both = (a > 0) & (b > 0)
        if values is not None:
            va = values[0][max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
            vb = values[1][max(0, dy):ny - max(0, -dy), max(0, dx):nx - max(0, -dx)]
            both &= va == vb
        if both.any():
            found.append(np.stack([a[both], b[both]], axis=1).astype(np.int64))
    if not found:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(found)
    keys = np.unique(pairs[:, 0] << 32 | pairs[:, 1])
    return np.stack([keys >> 32, keys & 0xFFFFFFFF], axis=1)


def _label_slabs(read_mask: Callable[[int, int], np.ndarray], shape: tuple[int, int, int],
                 out: Any, planes: int, spacing: tuple[float, float, float],
                 min_size_mm3: float, connectivity: int, values_apart: bool = False
                 ) -> Steps[int]:
    """Label a mask given slab by slab into the zarr array ``out``; returns the count.

    ``values_apart``: ``read_mask`` gives label values, whose components are kept apart
    (:func:`~napari_xaimed.evaluation.instances.value_components`).
    A step per slab of each of its two passes (components, then final numbers)."""
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components as graph_components

    from napari_xaimed.components.memory import connected_components, value_components

    label = value_components if values_apart else connected_components
    last_values = None

    # pass 1: components per slab, provisional ids offset to be unique, written to ``out``;
    # the pairs of provisional ids that touch across slab boundaries; their sizes
    offset, sizes, edges, last = 0, [np.zeros(1, np.int64)], [], None
    depth = shape[0]
    for start, stop in z_slabs(depth, planes):
        yield Progress(start, 2 * depth, f"components: planes {start}-{stop - 1}")
        block = read_mask(start, stop)
        local, n = label(block, connectivity)
        # the values of the slab's first and last planes, to join components across slabs
        ends = (block[0].copy(), block[-1].copy()) if values_apart else None
        del block
        sizes.append(np.bincount(local.ravel(), minlength=n + 1)[1:].astype(np.int64))
        provisional = local.astype(_LABEL_DTYPE)
        del local
        if n:
            provisional[provisional > 0] += _LABEL_DTYPE(offset)
        if last is not None:
            edges.append(_boundary_pairs(last, provisional[0], connectivity,
                                         (last_values, ends[0]) if ends else None))
        last = provisional[-1].copy()
        last_values = ends[1] if ends else None
        out[start:stop] = provisional
        del provisional
        offset += n
        if offset >= np.iinfo(_LABEL_DTYPE).max:
            raise XaimedError("more than 4 billion provisional components: the mask is "
                              "mostly noise; smooth or threshold it differently.")
    if offset == 0:
        return 0
    size = np.concatenate(sizes)
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    graph = sparse.coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                              shape=(offset + 1, offset + 1))
    _, component = graph_components(graph, directed=False)
    # merged sizes; the minimum size applies to whole (merged) instances
    merged = np.bincount(component[1:], weights=size[1:], minlength=component.max() + 1)
    keep = merged * float(np.prod(spacing)) >= min_size_mm3 if min_size_mm3 > 0 else (
        merged > 0)
    # Raster order of first voxels: within a slab cc3d numbers components in raster order,
    # and slabs follow one another, so an instance's first voxel belongs to its smallest
    # provisional id: number instances by first appearance along the provisional ids.
    seen, first = np.unique(component[1:], return_index=True)
    order = seen[keep[seen]][np.argsort(first[keep[seen]], kind="stable")]
    number = np.zeros(component.max() + 1, _LABEL_DTYPE)
    number[order] = np.arange(1, len(order) + 1, dtype=_LABEL_DTYPE)
    lut = number[component]
    lut[0] = 0
    # pass 2: provisional ids to final ones, in place
    for start, stop in z_slabs(depth, planes):
        yield Progress(depth + start, 2 * depth, f"numbering: planes {start}-{stop - 1}")
        out[start:stop] = lut[np.asarray(out[start:stop])]
    return int(len(order))


def _output(out: str | Path, shape: tuple[int, int, int], dtype: Any,
            spacing: tuple[float, float, float], origin: Any, planes: int,
            overwrite: bool) -> Any:
    chunks = (planes, min(shape[1], 512), min(shape[2], 512))
    return create_zarr(out, shape, dtype, spacing, origin, chunks, is_label=True,
                       overwrite=overwrite)


def label_lazy(
    mask: Any,
    out: str | Path,
    spacing: tuple[float, float, float] | None = None,
    min_size_mm3: float = 0.0,
    connectivity: int = 26,
    *,
    origin: tuple[float, float, float] | None = None,
    slab: int | None = None,
    overwrite: bool = False,
    values_apart: bool = False,
):
    """Connected components of a mask larger than memory, written to a Zarr store.

    The same labels as :func:`~napari_xaimed.segmentation.split_instances` (without a split)
    on the whole mask: components found slab by slab and merged across slab boundaries,
    instances smaller than ``min_size_mm3`` (merged size) removed, numbered ``1..n`` in raster
    order.

    Parameters
    ----------
    mask : array-like
        3D, nonzero = foreground: numpy, memory map, zarr or dask array.
    out : str or pathlib.Path
        The Zarr store to write (``.zarr``); an existing one only with ``overwrite``.
    spacing : tuple of float, optional
        Voxel size in mm ``(z, y, x)``; 1 mm when omitted.
    min_size_mm3 : float
    connectivity : {6, 18, 26}
    origin : tuple of float, optional
        World position of voxel ``(0, 0, 0)`` (mm), kept in the store.
    slab : int, optional
        Planes per slab (default: about 32 MB of mask voxels, a multiple of its z chunk).
    overwrite : bool
    values_apart : bool
        ``mask`` holds label values whose components are kept apart: voxels of different
        values never join one instance (as
        :func:`~napari_xaimed.evaluation.instances.value_components` in memory).

    Returns
    -------
    (dask.array.Array, int)
        The labels (uint32) over the store, and the number of instances.
    """
    import dask.array as da

    shape = _check_3d(mask, "mask")
    spacing = as_spacing(spacing)
    if int(connectivity) not in _RANK:
        raise XaimedError(f"connectivity must be 6, 18 or 26, got {connectivity}.")
    planes = _planes(mask, slab)
    array = _output(out, shape, _LABEL_DTYPE, spacing, origin, planes, overwrite)
    if values_apart:
        def read(a: int, b: int) -> np.ndarray:
            return read_slab(mask, a, b)
    else:
        def read(a: int, b: int) -> np.ndarray:
            return read_slab(mask, a, b) != 0
    n = run_steps(_label_slabs(read, shape, array, planes, spacing, float(min_size_mm3),
                               int(connectivity), values_apart))
    return da.from_zarr(array), n
