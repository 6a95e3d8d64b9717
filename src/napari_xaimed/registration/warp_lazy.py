"""Warping a volume larger than memory with a coarse displacement field, box by box into a Zarr
store: the full-resolution image of a lazy registration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_origin, as_spacing
from napari_xaimed.io.lazy import create_zarr, is_lazy, z_slabs
from napari_xaimed.registration.downsample import Vec3, _three_d
from napari_xaimed.registration.fields import INTERPOLATIONS, _label_vote, moving_index

#: Fixed voxels per slab of the full-resolution warp (its float64 coordinates: 48 B a voxel).
WARP_VOXELS = 1_000_000


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
