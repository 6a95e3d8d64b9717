"""Block-reduced copies of a volume larger than memory (mean, max or mode over blocks), read slab
by slab: what the lazy registration registers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.io.lazy import SLAB_BYTES, read_slab, z_slabs

Vec3 = tuple[float, float, float]

#: Default bound on the voxels of each downsampled copy (256^3).
MAX_VOXELS = 2**24


#: Fewest coarse voxels per axis (ANTs needs at least 4).
MIN_COARSE = 4


REDUCTIONS = ("mean", "max", "mode")


@dataclass
class Downsampled:
    """A block-reduced copy of a volume and its grid (world coordinates kept).

    Attributes
    ----------
    data : numpy.ndarray
        The coarse volume (float32 for ``"mean"``, the input dtype otherwise).
    spacing, origin : tuple of float
        The coarse grid: ``factors * spacing`` and ``origin + (factors - 1) / 2 * spacing``.
    factors : tuple of int
        Full voxels per coarse voxel along each axis.
    shape : tuple of int
        The full-resolution shape it came from.
    """

    data: np.ndarray
    spacing: Vec3
    origin: Vec3
    factors: tuple[int, int, int]
    shape: tuple[int, int, int]


def _three_d(array: Any, name: str) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in np.shape(array))
    if len(shape) != 3:
        hint = ("pick one channel or time point (e.g. data[0])" if len(shape) > 3
                else "a 2D image needs a z axis (data[np.newaxis])")
        raise XaimedError(f"{name} must be a 3D (z, y, x) volume, got shape {shape}: {hint}.")
    if min(shape) < 1:
        raise XaimedError(f"{name} is empty (shape {shape}).")
    return shape  # type: ignore[return-value]


def shrink_factors(shape: Sequence[int], spacing: Sequence[float], max_voxels: int = MAX_VOXELS
                   ) -> tuple[int, int, int]:
    """The smallest integer factors that bring ``shape`` to at most ``max_voxels`` voxels.

    The factor grows on the axis whose coarse spacing (``factor * spacing``) is finest, so the
    coarse voxels come out as close to isotropic as integer factors allow; no axis goes below
    :data:`MIN_COARSE` voxels.

    Raises
    ------
    XaimedError
        If ``max_voxels`` is below ``4**3`` or cannot be reached with 4 voxels per axis.
    """
    shape = tuple(int(n) for n in shape)
    spacing = as_spacing(spacing)
    max_voxels = int(max_voxels)
    if max_voxels < MIN_COARSE**3:
        raise XaimedError(f"max_voxels={max_voxels} is too small: a registration needs at least "
                          f"{MIN_COARSE} voxels per axis ({MIN_COARSE**3} in all); use e.g. "
                          f"2**21 (128^3) or the default {MAX_VOXELS}.")
    factors = [1, 1, 1]
    while math.prod(n // f for n, f in zip(shape, factors, strict=True)) > max_voxels:
        axes = [a for a in range(3) if shape[a] // (factors[a] + 1) >= MIN_COARSE]
        if not axes:
            raise XaimedError(
                f"a volume of shape {shape} cannot be brought to {max_voxels} voxels with at "
                f"least {MIN_COARSE} voxels per axis: raise max_voxels.")
        axis = min(axes, key=lambda a: (factors[a] * spacing[a], -shape[a] // factors[a]))
        factors[axis] += 1
    return tuple(factors)  # type: ignore[return-value]


def _as_factors(shrink: int | Sequence[int], shape: tuple[int, int, int],
                minimum: int = MIN_COARSE) -> tuple[int, int, int]:
    factors = (int(shrink),) * 3 if np.isscalar(shrink) else tuple(int(f) for f in shrink)
    if len(factors) != 3 or min(factors) < 1:
        raise XaimedError(f"shrink must be a positive integer or three of them (z, y, x), got "
                          f"{shrink!r}.")
    coarse = tuple(n // f for n, f in zip(shape, factors, strict=True))
    if min(coarse) < minimum:
        raise XaimedError(f"shrink {factors} leaves a volume of shape {shape} with {coarse} "
                          f"voxels: at least {minimum} per axis are needed; shrink less.")
    return factors  # type: ignore[return-value]


def _reduce_blocks(block: np.ndarray, factors: tuple[int, int, int], reduce: str) -> np.ndarray:
    nz, ny, nx = (n // f for n, f in zip(block.shape, factors, strict=True))
    fz, fy, fx = factors
    cells = block.reshape(nz, fz, ny, fy, nx, fx)
    if reduce == "mean":
        return cells.mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
    if reduce == "max":
        return cells.max(axis=(1, 3, 5))
    # mode: the most frequent label of each block (ties: the smaller label)
    best = np.zeros((nz, ny, nx), block.dtype)
    count = np.full((nz, ny, nx), -1, np.int64)
    for value in np.unique(block):
        n = (cells == value).sum(axis=(1, 3, 5))
        better = n > count
        best[better], count[better] = value, n[better]
    return best


def downsample(
    array: Any,
    factors: int | Sequence[int] | None = None,
    *,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    max_voxels: int = MAX_VOXELS,
    reduce: str = "mean",
    slab_bytes: int = SLAB_BYTES,
) -> Downsampled:
    """A block-reduced copy of a (possibly larger than memory) volume, read slab by slab.

    Parameters
    ----------
    array : array-like
        3D ``(z, y, x)``: numpy, a memory map, a zarr or a dask array.
    factors : int or sequence of int, optional
        Voxels per block along each axis; default :func:`shrink_factors` for ``max_voxels``.
    spacing, origin : sequence of float
        The full grid (mm, ``(z, y, x)``).
    max_voxels : int
        Bound on the coarse voxels when ``factors`` is not given.
    reduce : {"mean", "max", "mode"}
        ``"mean"`` for images, ``"max"`` for masks (a region stays in), ``"mode"`` for label
        maps (the most frequent label of each block).
    slab_bytes : int
        About this many bytes of the input are read at a time.

    Returns
    -------
    Downsampled
        The trailing ``shape % factors`` planes of each axis are cropped (see the module
        docstring), so the coarse grid's voxel centres are exactly the blocks' centres.
    """
    shape = _three_d(array, "the volume to downsample")
    if reduce not in REDUCTIONS:
        raise XaimedError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    spacing, origin = as_spacing(spacing), as_origin(origin)
    factors = (shrink_factors(shape, spacing, max_voxels) if factors is None
               else _as_factors(factors, shape, minimum=1))
    coarse_shape = tuple(n // f for n, f in zip(shape, factors, strict=True))
    dtype = np.dtype(getattr(array, "dtype", np.float32))
    out = np.empty(coarse_shape, np.float32 if reduce == "mean" else dtype)
    plane = shape[1] * shape[2] * max(dtype.itemsize, 8)  # float64 temporaries of the mean
    blocks = max(1, int(slab_bytes) // max(1, plane * factors[0]))  # coarse planes per read
    crop = (slice(0, coarse_shape[1] * factors[1]), slice(0, coarse_shape[2] * factors[2]))
    for start, stop in z_slabs(coarse_shape[0], blocks):
        slab = read_slab(array, start * factors[0], stop * factors[0])[(slice(None), *crop)]
        if reduce == "mean" and not np.issubdtype(slab.dtype, np.number):
            slab = slab.astype(np.float32)
        out[start:stop] = _reduce_blocks(slab, factors, reduce)
    coarse_spacing = tuple(f * s for f, s in zip(factors, spacing, strict=True))
    coarse_origin = tuple(o + (f - 1) / 2 * s for o, f, s in zip(origin, factors, spacing,
                                                                  strict=True))
    return Downsampled(data=out, spacing=coarse_spacing, origin=coarse_origin,  # type: ignore
                       factors=factors, shape=shape)
