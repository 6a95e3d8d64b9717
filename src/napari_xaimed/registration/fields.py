"""Displacement fields: resampling with them, their Jacobian, a warped grid and vectors.

A field follows the package convention: shape ``(z, y, x, 3)``, millimetres, components in
``(z, y, x)`` order, on the fixed grid, pull-back: the fixed point ``p`` (world mm) takes its value
from the moving image at ``p + u(p)``. A grid is described by its spacing and origin in mm (world
position of voxel ``(0, 0, 0)``), as napari's ``scale`` and ``translate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import starmap

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.lazy import slab_size, z_slabs

Vec3 = tuple[float, float, float]
INTERPOLATIONS = ("linear", "nearest", "label")
_CHUNK_VOXELS = 1_000_000  # resampling works through z-slabs of about this many voxels


def check_field(displacement: np.ndarray) -> np.ndarray:
    """A ``(z, y, x, 3)`` finite field, or a clear error (checked by z-slabs: the finite test
    of a whole CT-sized field would take a 236 MB boolean copy)."""
    field = np.asarray(displacement)
    if field.ndim != 4 or field.shape[-1] != 3:
        raise XaimedError(f"a displacement field has shape (z, y, x, 3), got {field.shape}.")
    planes = slab_size(field.shape[:3], 1, budget=_CHUNK_VOXELS)
    for zs in starmap(slice, z_slabs(field.shape[0], planes)):
        if not np.isfinite(field[zs]).all():
            raise XaimedError("the displacement field holds NaN or infinite values.")
    return field


# Voxels per slab of the Jacobian's derivatives: its float64 temporaries (nine derivatives and
# a few products) take about 80 MB per slab at 512 x 512 (3 slices), a quarter of a CT volume.
SLAB_VOXELS = 1_000_000


def jacobian_determinant(displacement: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Determinant of the Jacobian of ``p -> p + u(p)``, voxel by voxel (float32).

    Derivatives are central differences in mm (one-sided at the border, ``numpy.gradient``).
    Unlike ``ants.create_jacobian_determinant_image``, which clamps negative values to 0, the
    sign is kept: a determinant <= 0 marks a folded voxel, 1 no change of volume, 0.5 a local
    halving of the moving volume mapped there.
    """
    field = check_field(displacement)
    spacing = tuple(float(s) for s in spacing)
    depth = field.shape[0]
    out = np.empty(field.shape[:3], np.float32)
    # Slabs with a one-slice halo: the nine float64 derivatives of a whole CT volume would take
    # 9 x 8 bytes per voxel (5.7 GB at 512 x 512 x 300). The halo makes the z differences
    # central inside the volume, so every slab gives exactly the whole volume's values.
    for z0, z1 in z_slabs(depth, slab_size(field.shape[:3], 1, budget=SLAB_VOXELS)):
        lo, hi = max(z0 - 1, 0), min(z1 + 1, depth)
        out[z0:z1] = _determinant(field[lo:hi], spacing, slice(z0 - lo, z1 - lo))
    return out


def _determinant(field: np.ndarray, spacing: tuple[float, ...], core: slice) -> np.ndarray:
    """The determinant on the ``core`` slices of a slab (the others are its z halo)."""
    # grad[i][j] = d u_i / d x_j, plus the identity; y and x derivatives on the core only
    grad = []
    for i in range(3):
        component = field[..., i].astype(np.float64)
        row = [np.gradient(component, spacing[0], axis=0)[core].copy()]  # halo freed
        row += list(np.gradient(component[core], *spacing[1:], axis=(1, 2)))
        del component
        row[i] += 1.0
        grad.append(row)
    (a, b, c), (d, e, f), (g, h, k) = grad
    # a (ek - fh) - b (dk - fg) + c (dh - eg), in place, in this order
    det = e * k
    det -= f * h
    det *= a
    term = d * k
    term -= f * g
    term *= b
    det -= term
    term = d * h
    term -= e * g
    term *= c
    det += term
    return det


def jacobian_summary(jacobian: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Min, max, mean, std of the determinant and the share (%) of folded voxels (det <= 0).

    Sums in float64 over z-slabs (two passes: mean, then squared deviations), so a CT-sized
    map needs no whole-volume temporary.
    """
    jacobian = np.asarray(jacobian)
    if jacobian.ndim == 0:
        jacobian = jacobian.reshape(1)
    mask = None if mask is None else np.asarray(mask, bool).reshape(jacobian.shape)
    planes = slab_size(jacobian.shape, 1, budget=_CHUNK_VOXELS)
    slabs = list(starmap(slice, z_slabs(jacobian.shape[0], planes)))

    def values(zs: slice) -> np.ndarray:
        return jacobian[zs].ravel() if mask is None else jacobian[zs][mask[zs]]

    count = folded = 0
    total, low, high = 0.0, np.inf, -np.inf
    for zs in slabs:
        v = values(zs)
        if v.size:
            count += v.size
            folded += int(np.count_nonzero(v <= 0))
            total += float(np.sum(v, dtype=np.float64))
            low, high = min(low, float(v.min())), max(high, float(v.max()))
    if count == 0:
        nan = float("nan")
        return {"jacobian_min": nan, "jacobian_max": nan, "jacobian_mean": nan,
                "jacobian_std": nan, "folded_percent": nan, "folded_voxels": 0}
    mean = total / count
    squares = 0.0
    for zs in slabs:
        deviation = values(zs).astype(np.float64)
        deviation -= mean
        squares += float(np.dot(deviation, deviation))
    return {
        "jacobian_min": low,
        "jacobian_max": high,
        "jacobian_mean": mean,
        "jacobian_std": float(np.sqrt(squares / count)),
        "folded_percent": 100.0 * folded / count,
        "folded_voxels": folded,
    }


def moving_index(displacement: np.ndarray | None, shape: tuple[int, ...], zs: slice,
                 fixed_spacing: Vec3, fixed_origin: Vec3, moving_spacing: Vec3,
                 moving_origin: Vec3) -> np.ndarray:
    """Moving-image voxel coordinates ``(3, nz, y, x)`` of the fixed voxels of slab ``zs``."""
    idx = np.mgrid[zs, 0:shape[1], 0:shape[2]].astype(np.float64)
    for axis in range(3):
        world = fixed_origin[axis] + idx[axis] * fixed_spacing[axis]
        if displacement is not None:
            world += displacement[zs, ..., axis]
        idx[axis] = (world - moving_origin[axis]) / moving_spacing[axis]
    return idx


def _label_vote(labels: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Label-preserving linear interpolation: the label whose trilinear weight over the 8
    neighbouring voxels is largest (ties: the smaller label). Outside the volume is label 0.

    Equal to linearly interpolating each label's indicator and taking the argmax (see the
    tests), but in 8 x 8 passes whatever the number of labels.
    """
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    shape = np.asarray(labels.shape)[:, None]
    flat_coords = base.reshape(3, -1)
    frac = frac.reshape(3, -1)
    corner_labels, corner_weights = [], []
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                offset = np.array([dz, dy, dx])[:, None]
                at = flat_coords + offset
                inside = np.all((at >= 0) & (at < shape), axis=0)
                lab = np.zeros(at.shape[1], labels.dtype)
                lab[inside] = labels[tuple(at[:, inside])]
                w = np.ones(at.shape[1])
                for axis, d in enumerate((dz, dy, dx)):
                    w *= frac[axis] if d else 1.0 - frac[axis]
                corner_labels.append(lab)
                corner_weights.append(w)
    best_label = np.zeros(flat_coords.shape[1], labels.dtype)
    best_total = np.full(flat_coords.shape[1], -1.0)
    for lab in corner_labels:
        total = np.zeros(flat_coords.shape[1])
        for lab2, w2 in zip(corner_labels, corner_weights, strict=True):
            total += np.where(lab2 == lab, w2, 0.0)
        better = (total > best_total + 1e-12) | ((np.abs(total - best_total) <= 1e-12)
                                                 & (lab < best_label))
        best_label = np.where(better, lab, best_label)
        best_total = np.where(better, total, best_total)
    return best_label.reshape(coords.shape[1:])


def resample(array: np.ndarray, fixed_shape: tuple[int, int, int],
             displacement: np.ndarray | None, *, fixed_spacing: Vec3, fixed_origin: Vec3,
             moving_spacing: Vec3, moving_origin: Vec3, interpolation: str = "linear",
             fill: float = 0.0) -> np.ndarray:
    """Resample a moving-space volume onto the fixed grid through a displacement field.

    Parameters
    ----------
    array : numpy.ndarray
        3D volume on the moving grid.
    fixed_shape : tuple of int
    displacement : numpy.ndarray or None
        ``(z, y, x, 3)`` field on the fixed grid (mm, pull-back); None for the identity in world
        coordinates (the "before registration" view of the moving image).
    fixed_spacing, fixed_origin, moving_spacing, moving_origin : tuple of float
    interpolation : {"linear", "nearest", "label"}
        ``label``: label-preserving linear interpolation (each voxel takes the label with the
        largest interpolated share), for label maps; ``nearest`` also keeps labels, blockier.
    fill : float
        Value outside the moving volume (linear and nearest; labels get 0).

    Returns
    -------
    numpy.ndarray
        On the fixed grid; float32 for linear, the input dtype otherwise.
    """
    if interpolation not in INTERPOLATIONS:
        raise XaimedError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}.")
    array = np.asarray(array)
    if array.ndim != 3:
        raise XaimedError(f"only 3D (z, y, x) volumes can be resampled, got shape {array.shape}.")
    if displacement is not None:
        displacement = check_field(displacement)
        if displacement.shape[:3] != tuple(fixed_shape):
            raise XaimedError(f"the displacement field {displacement.shape[:3]} is not on the "
                              f"fixed grid {tuple(fixed_shape)}.")
    if interpolation == "linear":
        if not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
            array = array.astype(np.float32)
        source = array.astype(np.float32, copy=False)
        out = np.empty(fixed_shape, np.float32)
    else:
        source = array
        out = np.empty(fixed_shape, array.dtype)
    planes = slab_size(fixed_shape, 1, budget=_CHUNK_VOXELS)
    for zs in starmap(slice, z_slabs(fixed_shape[0], planes)):
        coords = moving_index(displacement, fixed_shape, zs, fixed_spacing, fixed_origin,
                               moving_spacing, moving_origin)
        if interpolation == "label":
            out[zs] = _label_vote(source, coords)
        else:
            out[zs] = ndi.map_coordinates(source, coords, order=1 if interpolation == "linear"
                                          else 0, mode="constant", cval=fill)
    return out


def sample_field(displacement: np.ndarray, points_mm: np.ndarray, spacing: Vec3,
                 origin: Vec3) -> np.ndarray:
    """The displacement (mm) at world points ``(n, 3)``, linearly interpolated; points outside
    the grid take the nearest edge value."""
    field = check_field(displacement)
    points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    idx = ((points - np.asarray(origin)) / np.asarray(spacing)).T
    return np.stack([ndi.map_coordinates(field[..., a].astype(np.float64), idx, order=1,
                                         mode="nearest") for a in range(3)], axis=1)


def displacement_vectors(displacement: np.ndarray, step: int | Sequence[int] = 8,
                         spacing: Vec3 = (1.0, 1.0, 1.0), min_mm: float = 0.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A napari Vectors layer's data for a subsample of the field.

    Parameters
    ----------
    displacement : numpy.ndarray
        ``(z, y, x, 3)`` field in mm.
    step : int or sequence of int
        Take every ``step``-th voxel along each axis (the grid starts half a step in).
    spacing : tuple of float
        Voxel size of the field's grid (mm); the vectors are given in voxel units so the layer
        takes ``scale=spacing`` like every other output and lands in world coordinates.
    min_mm : float
        Leave out vectors shorter than this.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(n, 2, 3)`` (position in voxels, projection in voxels) and the ``n`` lengths in mm.
    """
    field = check_field(displacement)
    steps = [int(step)] * 3 if np.isscalar(step) else [int(s) for s in step]
    if len(steps) != 3 or min(steps) < 1:
        raise XaimedError(f"step must be a positive integer or three of them, got {step!r}.")
    grids = [np.arange(s // 2, n, s) for s, n in zip(steps, field.shape[:3], strict=True)]
    zz, yy, xx = np.meshgrid(*grids, indexing="ij")
    positions = np.stack([zz.ravel(), yy.ravel(), xx.ravel()], axis=1)
    vectors_mm = field[zz, yy, xx].reshape(-1, 3).astype(np.float64)
    lengths = np.linalg.norm(vectors_mm, axis=1)
    keep = lengths >= min_mm
    data = np.stack([positions[keep], vectors_mm[keep] / np.asarray(spacing)], axis=1)
    return data.astype(np.float32), lengths[keep].astype(np.float32)


def warped_grid(displacement: np.ndarray, spacing: Vec3, origin: Vec3 = (0.0, 0.0, 0.0), *,
                grid_mm: float = 5.0, line_mm: float | None = None,
                axes: Sequence[int] = (1, 2)) -> np.ndarray:
    """A grid drawn in moving space, seen through the field on the fixed grid (uint8 0/1).

    A fixed voxel ``p`` is on a line when ``(p + u(p))`` along one of ``axes`` lies within
    ``line_mm / 2`` of a multiple of ``grid_mm``: straight lines where the field is a
    translation, bent where it deforms. The default draws lines across y and x, which read
    well in axial (z) slices.
    """
    field = check_field(displacement)
    if grid_mm <= 0:
        raise XaimedError(f"grid_mm must be positive, got {grid_mm}.")
    half = 0.5 * (line_mm if line_mm is not None else max(min(spacing[a] for a in axes), 1e-6))
    out = np.zeros(field.shape[:3], np.uint8)
    # z-slabs: the float64 positions of a whole CT-sized field would be 630 MB per temporary
    planes = slab_size(field.shape[:3], 1, budget=_CHUNK_VOXELS)
    for zs in starmap(slice, z_slabs(field.shape[0], planes)):
        on_line = np.zeros(out[zs].shape, bool)
        for axis in axes:
            shape = [1, 1, 1]
            shape[axis] = field.shape[axis]
            world = origin[axis] + np.arange(field.shape[axis]).reshape(shape) * spacing[axis]
            if axis == 0:
                world = world[zs]
            q = world + field[zs, ..., axis]
            on_line |= np.abs(q - grid_mm * np.round(q / grid_mm)) <= half
        out[zs] = on_line
    return out
