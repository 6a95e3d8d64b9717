"""Registration of volumes larger than memory: register downsampled copies, warp at full size.

ANTs needs its images in memory, and a registration's field need not be finer than the
anatomy it follows. :func:`register_lazy` therefore registers block-mean copies of the fixed
and moving images (each at most ``max_voxels`` voxels, computed slab by slab from a dask, Zarr,
memory-mapped or numpy array) with :func:`~napari_xaimed.registration.register_steps`, and
:func:`warp_lazy` carries a full-resolution moving volume onto the full-resolution fixed grid
through that coarse field, one z-slab at a time, into a Zarr store.

**Geometry of a downsampled copy.** Integer factors ``f`` per axis; coarse voxel ``k`` is the
mean of full voxels ``k*f .. k*f + f - 1``, so its centre is at ``origin + (k*f + (f-1)/2) *
spacing``: the coarse grid has spacing ``f * spacing`` and origin ``origin + (f-1)/2 *
spacing``, and every coarse voxel sits where the voxels it averages sit. A remainder of fewer
than ``f`` planes at the far end of an axis is cropped (not padded): a padded block would
average real voxels with made-up ones and put its value off its centre. The cropped planes are
still warped at full resolution: the field is extended from the nearest coarse voxel there.

**Full-resolution warp.** For a slab of fixed voxels: their world points ``p``, the coarse
displacement ``u(p)`` by trilinear interpolation (nearest edge value beyond the coarse grid, as
:func:`~napari_xaimed.registration.fields.sample_field`), the moving voxel coordinates of
``p + u(p)`` (:func:`~napari_xaimed.registration.fields.moving_index`: the package's pull-back
convention), then only the moving sub-box those coordinates touch is read and interpolated
(linear, nearest, or the label vote of :func:`~napari_xaimed.registration.fields.resample`).
Memory: one slab of the output and its coordinates, the moving sub-box, and the coarse field.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.io.lazy import SLAB_BYTES, create_zarr, is_lazy, read_slab, z_slabs
from napari_xaimed.registration.fields import INTERPOLATIONS, _label_vote, moving_index
from napari_xaimed.registration.run import RegistrationResult, register_steps

Vec3 = tuple[float, float, float]
#: Default bound on the voxels of each downsampled copy (256^3).
MAX_VOXELS = 2**24
#: Fewest coarse voxels per axis (ANTs needs at least 4).
MIN_COARSE = 4
#: Fixed voxels per slab of the full-resolution warp (its float64 coordinates: 48 B a voxel).
WARP_VOXELS = 1_000_000
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


@dataclass
class LazyRegistration:
    """A registration of downsampled copies, and how to apply it at full resolution.

    Attributes
    ----------
    coarse : RegistrationResult
        The registration of the coarse copies, on the coarse fixed grid (its ``displacement``
        in mm, pull-back, ``jacobian``, ``metrics`` of the coarse images, ``vectors()``,
        ``grid()``), with the coarse moving grid as its moving grid.
    fixed_shape, fixed_spacing, fixed_origin : tuple
        The full-resolution fixed grid, where :meth:`warp` puts its output.
    moving_shape, moving_spacing, moving_origin : tuple
        The full-resolution moving grid, from which :meth:`warp` reads.
    fixed_factors, moving_factors : tuple of int
        Full voxels per coarse voxel of each image.
    warped : dask.array.Array or None
        The full-resolution warped moving image over the Zarr store ``path``, when
        :func:`register_lazy` was given ``out``.
    path : pathlib.Path or None
    """

    coarse: RegistrationResult
    fixed_shape: tuple[int, int, int]
    fixed_spacing: Vec3
    fixed_origin: Vec3
    moving_shape: tuple[int, int, int]
    moving_spacing: Vec3
    moving_origin: Vec3
    fixed_factors: tuple[int, int, int]
    moving_factors: tuple[int, int, int]
    warped: Any = None
    path: Path | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def coarse_spacing(self) -> Vec3:
        """Spacing (mm) of the coarse fixed grid, the field's grid (napari ``scale``)."""
        return self.coarse.fixed_spacing

    @property
    def coarse_origin(self) -> Vec3:
        """Origin (mm) of the coarse fixed grid (napari ``translate``)."""
        return self.coarse.fixed_origin

    def warp_steps(self, moving: Any, out: str | Path, *, interpolation: str = "linear",
                   fill: float = 0.0, slab: int | None = None) -> Steps[Any]:
        """Generator form of :meth:`warp` (a step per slab)."""
        if tuple(np.shape(moving)) != self.moving_shape:
            raise XaimedError(
                f"the volume to warp has shape {tuple(np.shape(moving))}, the full-resolution "
                f"moving image {self.moving_shape}: only volumes on the moving image's grid can "
                "be carried along.")
        return (yield from warp_lazy_steps(
            moving, self.coarse.displacement, out, coarse_spacing=self.coarse_spacing,
            coarse_origin=self.coarse_origin, fixed_shape=self.fixed_shape,
            fixed_spacing=self.fixed_spacing, fixed_origin=self.fixed_origin,
            moving_spacing=self.moving_spacing, moving_origin=self.moving_origin,
            interpolation=interpolation, fill=fill, slab=slab))

    def warp(self, moving: Any, out: str | Path, *, interpolation: str = "linear",
             fill: float = 0.0, slab: int | None = None) -> Any:
        """Carry a full-resolution moving-grid volume onto the full fixed grid, into a Zarr
        store at ``out``; returns a dask array over it (see :func:`warp_lazy`)."""
        return run_steps(self.warp_steps(moving, out, interpolation=interpolation, fill=fill,
                                         slab=slab))

    def to_dict(self) -> dict[str, Any]:
        """Geometry, factors, the coarse registration's parameters and figures (no arrays)."""
        return {"lazy": True, **self.coarse.to_dict(),
                "coarse_fixed_spacing": self.coarse.fixed_spacing,
                "coarse_fixed_origin": self.coarse.fixed_origin,
                "coarse_moving_spacing": self.coarse.moving_spacing,
                "coarse_moving_origin": self.coarse.moving_origin,
                "fixed_shape": self.fixed_shape, "fixed_spacing": self.fixed_spacing,
                "fixed_origin": self.fixed_origin, "moving_shape": self.moving_shape,
                "moving_spacing": self.moving_spacing, "moving_origin": self.moving_origin,
                "fixed_factors": self.fixed_factors, "moving_factors": self.moving_factors,
                "warped_store": None if self.path is None else str(self.path),
                "seconds": self.seconds, "timings": self.timings}


def _volume(image: Any, spacing: Any, origin: Any, name: str) -> tuple[Any, Vec3, Vec3]:
    """An array with its grid; a path (a Zarr or NIfTI) is opened lazily with its own."""
    if isinstance(image, (str, Path)):
        from napari_xaimed.io import read_volume

        image = read_volume(image, lazy=True)  # a Zarr without spacing raises here
    if hasattr(image, "spacing") and hasattr(image, "affine") and hasattr(image, "data"):
        from napari_xaimed.io import grid_translate

        spacing = image.spacing if spacing is None else spacing
        origin = grid_translate(image.affine) if origin is None else origin
        image = image.data
    _three_d(image, name)
    if spacing is None:
        raise XaimedError(f"{name}: give its spacing (mm, (z, y, x)); a larger-than-memory "
                          "volume has no safe default.")
    return image, as_spacing(spacing, f"{name} spacing"), as_origin(origin, f"{name} origin")


def register_lazy_steps(
    fixed: Any,
    moving: Any,
    *,
    fixed_spacing: Any = None,
    moving_spacing: Any = None,
    fixed_origin: Any = None,
    moving_origin: Any = None,
    transform: str = "SyN",
    max_voxels: int = MAX_VOXELS,
    shrink: int | Sequence[int] | None = None,
    out: str | Path | None = None,
    fixed_mask: Any = None,
    moving_mask: Any = None,
    fixed_labels: Any = None,
    moving_labels: Any = None,
    slab: int | None = None,
    **params: Any,
) -> Steps[LazyRegistration]:
    """Generator form of :func:`register_lazy` (yields progress, returns the result)."""
    started = time.perf_counter()
    fixed, f_sp, f_or = _volume(fixed, fixed_spacing, fixed_origin, "fixed image")
    moving, m_sp, m_or = _volume(moving, moving_spacing, moving_origin, "moving image")
    f_shape, m_shape = tuple(np.shape(fixed)), tuple(np.shape(moving))
    f_fac = (shrink_factors(f_shape, f_sp, max_voxels) if shrink is None
             else _as_factors(shrink, f_shape))
    m_fac = (shrink_factors(m_shape, m_sp, max_voxels) if shrink is None
             else _as_factors(shrink, m_shape))
    if out is not None and Path(out).exists():  # before the registration, not after it
        raise XaimedError(f"{str(out)!r} already exists: pick another path for the warped "
                          "image, or remove it.")
    parts = 3 if out is not None else 2  # downsample, register (, warp)
    yield Progress(0, parts, f"downsampling the fixed image by {f_fac}")
    coarse_f = downsample(fixed, f_fac, spacing=f_sp, origin=f_or)
    yield Progress(0, parts, f"downsampling the moving image by {m_fac}")
    coarse_m = downsample(moving, m_fac, spacing=m_sp, origin=m_or)
    extra: dict[str, Any] = {}
    for key, value, shape, fac, sp, reduce in (
            ("fixed_mask", fixed_mask, f_shape, f_fac, f_sp, "max"),
            ("moving_mask", moving_mask, m_shape, m_fac, m_sp, "max"),
            ("fixed_labels", fixed_labels, f_shape, f_fac, f_sp, "mode"),
            ("moving_labels", moving_labels, m_shape, m_fac, m_sp, "mode")):
        if value is None:
            continue
        if tuple(np.shape(value)) != shape:
            raise XaimedError(f"{key} {tuple(np.shape(value))} must have its image's shape "
                              f"{shape}.")
        extra[key] = downsample(value, fac, spacing=sp, reduce=reduce).data
    downsampled = time.perf_counter()
    coarse = yield from within(register_steps(
        coarse_f.data, coarse_m.data, fixed_spacing=coarse_f.spacing,
        moving_spacing=coarse_m.spacing, fixed_origin=coarse_f.origin,
        moving_origin=coarse_m.origin, transform=transform, **extra, **params),
        1, parts, "coarse registration: ")
    coarse.params = {**coarse.params, "max_voxels": int(max_voxels),
                     "shrink": None if shrink is None else list(f_fac),
                     "fixed_factors": list(f_fac), "moving_factors": list(m_fac)}
    registered = time.perf_counter()
    result = LazyRegistration(
        coarse=coarse, fixed_shape=f_shape, fixed_spacing=f_sp, fixed_origin=f_or,
        moving_shape=m_shape, moving_spacing=m_sp, moving_origin=m_or, fixed_factors=f_fac,
        moving_factors=m_fac)
    if out is not None:
        result.warped = yield from within(result.warp_steps(moving, out, slab=slab),
                                          2, parts, "full-resolution warp: ")
        result.path = Path(out)
    done = time.perf_counter()
    result.seconds = done - started
    result.timings = {"downsample_s": downsampled - started,
                      "coarse_registration_s": registered - downsampled,
                      "warp_s": done - registered, "total_s": result.seconds}
    yield Progress(parts, parts, "done")
    return result


def register_lazy(fixed: Any, moving: Any, **kwargs: Any) -> LazyRegistration:
    """Register volumes larger than memory through downsampled copies.

    Parameters
    ----------
    fixed, moving : array-like, Volume or path
        3D ``(z, y, x)`` images: dask, zarr, memory-mapped or numpy arrays, a
        :class:`~napari_xaimed.io.Volume`, or the path of a Zarr / NIfTI file (opened lazily,
        its spacing and origin used when not given).
    fixed_spacing, moving_spacing : tuple of float
        Voxel sizes in mm (napari ``scale``); required for arrays.
    fixed_origin, moving_origin : tuple of float, optional
        World position (mm) of voxel ``(0, 0, 0)`` (napari ``translate``); 0 when omitted.
    transform : str
        As for :func:`~napari_xaimed.registration.register`.
    max_voxels : int
        Each downsampled copy has at most this many voxels (default 2**24, 256^3; ANTs SyN
        takes about a minute at 128^3 on 2 cores).
    shrink : int or sequence of int, optional
        Integer block factors (z, y, x) for both images instead of ``max_voxels``.
    out : path, optional
        A Zarr store (``.zarr``) to warp the full-resolution moving image into.
    fixed_mask, moving_mask, fixed_labels, moving_labels : array-like, optional
        On their image's full grid; downsampled with it (masks: block maximum, labels: block
        mode) for the coarse registration and its Dice figures.
    slab : int, optional
        Planes per slab of the full-resolution warp.
    **params
        The rest of :func:`~napari_xaimed.registration.register`'s arguments (``seed``,
        ``threads``, ``iterations``, ``metric``, landmarks in world mm, ...).

    Returns
    -------
    LazyRegistration
        ``.coarse`` the registration on the coarse fixed grid; ``.warp(volume, out)`` applies
        it at full resolution; ``.warped`` the warped image when ``out`` was given.
    """
    return run_steps(register_lazy_steps(fixed, moving, **kwargs))


class _CoarseField:
    """The coarse displacement's components, contiguous, for trilinear sampling at points."""

    def __init__(self, displacement: np.ndarray, spacing: Vec3, origin: Vec3) -> None:
        displacement = np.asarray(displacement)
        if displacement.ndim != 4 or displacement.shape[-1] != 3:
            raise XaimedError(f"a displacement field has shape (z, y, x, 3), got "
                              f"{displacement.shape}.")
        self.components = [np.ascontiguousarray(displacement[..., a], np.float32)
                           for a in range(3)]
        self.spacing, self.origin = np.asarray(spacing, float), np.asarray(origin, float)

    def on_slab(self, zs: slice, shape: tuple[int, int, int], spacing: Vec3, origin: Vec3
                ) -> np.ndarray:
        """The field (mm) at the fixed voxels of slab ``zs`` of a grid: ``(nz, y, x, 3)``."""
        axes = [np.arange(zs.start, zs.stop), np.arange(shape[1]), np.arange(shape[2])]
        coarse = [(origin[a] + axes[a] * spacing[a] - self.origin[a]) / self.spacing[a]
                  for a in range(3)]
        idx = np.stack(np.meshgrid(*coarse, indexing="ij"))
        return np.stack([ndi.map_coordinates(c, idx, order=1, mode="nearest", output=np.float64)
                         for c in self.components], axis=-1)


def _read_box(array: Any, box: tuple[slice, slice, slice]) -> np.ndarray:
    block = array[box]
    return np.asarray(block.compute() if is_lazy(block) else block)


def warp_lazy_steps(
    moving: Any,
    displacement: np.ndarray,
    out: str | Path,
    *,
    coarse_spacing: Sequence[float],
    coarse_origin: Sequence[float],
    fixed_shape: Sequence[int],
    fixed_spacing: Sequence[float],
    fixed_origin: Sequence[float] | None = None,
    moving_spacing: Sequence[float],
    moving_origin: Sequence[float] | None = None,
    interpolation: str = "linear",
    fill: float = 0.0,
    slab: int | None = None,
    chunks: Sequence[int] | None = None,
) -> Steps[Any]:
    """Generator form of :func:`warp_lazy` (a step per slab; cancel between slabs)."""
    import dask.array as da

    if interpolation not in INTERPOLATIONS:
        raise XaimedError(f"interpolation must be one of {INTERPOLATIONS}, got "
                          f"{interpolation!r}.")
    m_shape = _three_d(moving, "the volume to warp")
    f_shape = tuple(int(n) for n in fixed_shape)
    if len(f_shape) != 3 or min(f_shape) < 1:
        raise XaimedError(f"fixed_shape must be three positive sizes, got {fixed_shape}.")
    f_sp, f_or = as_spacing(fixed_spacing, "fixed_spacing"), as_origin(fixed_origin,
                                                                        "fixed_origin")
    m_sp, m_or = as_spacing(moving_spacing, "moving_spacing"), as_origin(moving_origin,
                                                                         "moving_origin")
    coarse = _CoarseField(displacement, as_spacing(coarse_spacing, "coarse_spacing"),
                          as_origin(coarse_origin, "coarse_origin"))
    dtype = np.dtype(getattr(moving, "dtype", np.float32))
    out_dtype = np.float32 if interpolation == "linear" else dtype
    planes = int(slab) if slab else max(1, WARP_VOXELS // (f_shape[1] * f_shape[2]))
    chunks = tuple(chunks) if chunks is not None else (
        min(planes, f_shape[0]), min(f_shape[1], 256), min(f_shape[2], 256))
    array = create_zarr(out, f_shape, out_dtype, f_sp, f_or, chunks,
                        is_label=interpolation != "linear")
    slabs = list(z_slabs(f_shape[0], planes))
    for i, (z0, z1) in enumerate(slabs):
        yield Progress(i, len(slabs), f"slab {i + 1} of {len(slabs)}")
        shape = (z1 - z0, f_shape[1], f_shape[2])
        origin = (f_or[0] + z0 * f_sp[0], f_or[1], f_or[2])
        field_mm = coarse.on_slab(slice(z0, z1), f_shape, f_sp, f_or)
        idx = moving_index(field_mm, shape, slice(0, shape[0]), f_sp, origin, m_sp, m_or)
        del field_mm
        lo = [max(0, int(np.floor(idx[a].min())) - 1) for a in range(3)]
        hi = [min(m_shape[a], int(np.ceil(idx[a].max())) + 2) for a in range(3)]
        if any(h <= lo_ for lo_, h in zip(lo, hi, strict=True)):  # wholly outside the moving
            array[z0:z1] = 0 if interpolation == "label" else fill
            continue
        source = _read_box(moving, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))
        for a in range(3):
            idx[a] -= lo[a]
        if interpolation == "label":
            array[z0:z1] = _label_vote(source, idx)
        else:
            if interpolation == "linear":
                source = source.astype(np.float32, copy=False)
            array[z0:z1] = ndi.map_coordinates(source, idx, order=1 if interpolation == "linear"
                                               else 0, mode="constant", cval=fill)
    yield Progress(len(slabs), len(slabs), "done")
    return da.from_zarr(array)


def warp_lazy(moving: Any, displacement: np.ndarray, out: str | Path, **kwargs: Any) -> Any:
    """Warp a full-resolution moving volume through a coarse field onto the full fixed grid.

    Parameters
    ----------
    moving : array-like
        3D ``(z, y, x)`` on the full moving grid (dask, zarr, memory map or numpy); only the
        sub-box each output slab needs is read.
    displacement : numpy.ndarray
        ``(z, y, x, 3)`` mm, pull-back, on the coarse fixed grid (``coarse_spacing``,
        ``coarse_origin``), e.g. ``LazyRegistration.coarse.displacement``.
    out : path
        The Zarr store (``.zarr``, must not exist) the result is written to.
    coarse_spacing, coarse_origin : sequence of float
        The field's grid.
    fixed_shape, fixed_spacing, fixed_origin : sequence
        The full fixed grid of the output.
    moving_spacing, moving_origin : sequence of float
        The full moving grid.
    interpolation : {"linear", "nearest", "label"}
        As :meth:`~napari_xaimed.registration.RegistrationResult.apply`.
    fill : float
        Value outside the moving volume (labels get 0).
    slab : int, optional
        Output planes per slab (default about a million voxels).
    chunks : sequence of int, optional
        Zarr chunks of the output.

    Returns
    -------
    dask.array.Array
        Over the Zarr store (float32 for linear, the input dtype otherwise).
    """
    return run_steps(warp_lazy_steps(moving, displacement, out, **kwargs))
