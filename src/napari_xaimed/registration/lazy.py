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

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps, within
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.registration.downsample import (  # noqa: F401 - also importable from here
    MAX_VOXELS,
    MIN_COARSE,
    REDUCTIONS,
    Downsampled,
    Vec3,
    _as_factors,
    _three_d,
    downsample,
    shrink_factors,
)
from napari_xaimed.registration.in_memory import register_in_memory_steps
from napari_xaimed.registration.result import RegistrationResult
from napari_xaimed.registration.warp_lazy import (  # noqa: F401 - also importable from here
    WARP_VOXELS,
    _CoarseField,
    warp_lazy,
    warp_lazy_steps,
)


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
    coarse = yield from within(register_in_memory_steps(
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


