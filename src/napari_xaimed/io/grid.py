"""One voxel grid: the check every function that pairs two volumes voxel by voxel uses.

Two volumes lie on one grid when they have the same shape and their spacing, origin and axis
directions agree within tolerances relative to the voxel size. Float noise from a file round
trip is not a different grid: Panoptica's spine reference and prediction (one scanner grid,
0.586 x 0.586 x 3.3 mm) have origins 0.00064 mm apart along two axes (0.0011 of a voxel) after
their files were written, so an absolute tolerance of 1e-6 mm (or SimpleITK's default, 1e-6 of
the spacing) refuses them. The tolerances:

- spacing: :data:`SPACING_RTOL` relative, per axis;
- directions (unit voxel axes in the world): :data:`DIRECTION_ATOL` per cosine;
- origin: :data:`ORIGIN_VOXELS` of the smallest voxel size, as a distance in the world.

Over 512 voxels the spacing and direction tolerances move the far corner by at most 0.005 of a
voxel, so no voxel centre of one grid is more than about 1% of a voxel from the other's; a real
shift, even a tenth of a voxel, is refused. When the grids agree, results take the first
(reference) grid.

A grid comes from a :class:`~napari_xaimed.io.Volume` (its affine gives origin and directions),
a napari layer (``scale``, ``translate`` and, for a layer read from a file, the file's affine
in ``metadata["nifti"]`` for the directions), or a :class:`Grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

#: Largest relative difference of a voxel size (per axis) that is still one grid.
SPACING_RTOL = 1e-5
#: Largest difference of a direction cosine (unit voxel axes in the world) that is still one grid.
DIRECTION_ATOL = 1e-5
#: Largest distance of the origins, in voxels (of the smallest voxel size), that is still one grid.
ORIGIN_VOXELS = 1e-2

FIX = ("To fix it, resample one onto the other's grid (same shape, spacing, origin and "
       "orientation), or, if both are the same scan and only a header differs, give them the "
       "same geometry (in napari the same scale and translate; in files the same affine).")


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D voxel grid in world millimetres.

    Attributes
    ----------
    shape : tuple of int
        ``(z, y, x)`` voxels.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)`` (napari ``scale``).
    translate : tuple of float
        World position (mm) of voxel ``(0, 0, 0)`` along the voxel axes, ``(z, y, x)``
        (napari ``translate``, see :func:`napari_xaimed.io.grid_translate`).
    axes : numpy.ndarray or None
        3x3, columns the unit voxel axes ``(i, j, k)`` = ``(x, y, z)`` in the world (RAS, as
        a NIfTI affine); None when not known (a layer computed in the viewer), in which case
        origins are compared along the voxel axes and directions are not compared.
    name : str, optional
        How messages name it.
    """

    shape: tuple[int, ...]
    spacing: tuple[float, float, float]
    translate: tuple[float, float, float]
    axes: np.ndarray | None = None
    name: str | None = None

    @classmethod
    def from_affine(cls, shape: Sequence[int], affine: Any,
                    spacing: Sequence[float] | None = None) -> Grid:
        """The grid of a NIfTI-convention (RAS, ``(i, j, k)`` = ``(x, y, z)``) affine; the
        spacing from the affine's column lengths unless given (a file's header zooms)."""
        from napari_xaimed.io.volume import grid_translate

        affine = np.asarray(affine, dtype=float)
        lengths = np.linalg.norm(affine[:3, :3], axis=0)
        zyx = tuple(float(s) for s in (lengths[::-1] if spacing is None else spacing))[-3:]
        return cls(tuple(int(n) for n in shape)[-3:], zyx,  # type: ignore[arg-type]
                   grid_translate(affine), affine[:3, :3] / lengths)

    @property
    def origin(self) -> np.ndarray:
        """World position (mm) of voxel ``(0, 0, 0)``: RAS ``(x, y, z)`` when the axes are
        known, else the ``translate`` in ``(z, y, x)`` (the world as napari draws the layer)."""
        t = np.asarray(self.translate, dtype=float)
        return t if self.axes is None else self.axes @ t[::-1]


def grid_of(obj: Any) -> Grid:
    """The :class:`Grid` of a Volume, a napari layer or a Grid.

    Raises
    ------
    XaimedError
        For anything else.
    """
    if isinstance(obj, Grid):
        return obj
    if hasattr(obj, "scale") and hasattr(obj, "translate") and hasattr(obj, "data"):
        meta = getattr(obj, "metadata", None) or {}
        affine = (meta.get("nifti") or {}).get("affine") if isinstance(meta, dict) else None
        axes = None
        if affine is not None:
            matrix = np.asarray(affine, dtype=float)[:3, :3]
            axes = matrix / np.linalg.norm(matrix, axis=0)
        return Grid(tuple(int(n) for n in np.shape(obj.data))[-3:],
                    tuple(float(s) for s in obj.scale)[-3:],  # type: ignore[arg-type]
                    tuple(float(t) for t in obj.translate)[-3:],  # type: ignore[arg-type]
                    axes)
    if hasattr(obj, "affine") and hasattr(obj, "spacing") and hasattr(obj, "data"):
        return Grid.from_affine(np.shape(obj.data), obj.affine, obj.spacing)
    raise XaimedError(f"cannot tell the voxel grid of a {type(obj).__name__}: pass a Volume "
                      "(read_volume), a napari layer or a napari_xaimed.io.grid.Grid.")


def _name(obj: Any, default: str) -> str:
    if isinstance(obj, Grid):
        return obj.name or default
    name = getattr(obj, "name", None)
    if isinstance(name, str):
        return repr(name)
    path = getattr(obj, "path", None)
    return repr(path.name) if path is not None else default


def _decimals(a: np.ndarray, b: np.ndarray) -> int:
    """Decimals that show the largest difference of ``a`` and ``b`` with three digits."""
    largest = float(np.max(np.abs(a - b)))
    if not largest > 0:
        return 6
    return int(min(max(math.ceil(-math.log10(largest)) + 2, 2), 15))


def _pair(a: Any, b: Any) -> tuple[str, str]:
    """Both tuples with enough decimals that the numbers which differ look different."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = _decimals(a, b)

    def text(values: np.ndarray) -> str:
        return "(" + ", ".join(f"{v:.{d}f}" for v in values.ravel()) + ")"

    return text(a), text(b)


def grid_difference(first: Any, second: Any, names: tuple[str, str] | None = None,
                    *, shape: bool = True) -> str | None:
    """Why ``first`` and ``second`` are not on one grid, or None when they are.

    Parameters
    ----------
    first, second : Volume, napari layer or Grid
    names : tuple of str, optional
        How the message names them (default: the layers' names or the files' names).
    shape : bool
        Whether to compare the shapes too (False: only spacing, origin and directions).

    Returns
    -------
    str or None
        The message of :func:`check_same_grid`: each property that differs with both values,
        printed with the digits that differ, how far apart they are against the tolerance, and
        how to fix it.
    """
    a, b = grid_of(first), grid_of(second)
    na, nb = names or (_name(first, "the first volume"), _name(second, "the second volume"))
    if shape and tuple(a.shape) != tuple(b.shape):
        return (f"{na} {tuple(a.shape)} and {nb} {tuple(b.shape)} differ in shape (z, y, x "
                f"voxels), so they are not one grid. {FIX}")
    problems = []
    sa, sb = np.asarray(a.spacing, dtype=float), np.asarray(b.spacing, dtype=float)
    relative = float(np.max(np.abs(sa - sb) / np.maximum(sa, sb)))
    if relative > SPACING_RTOL:
        pa, pb = _pair(sa, sb)
        problems.append(f"spacing (z, y, x) {pa} and {pb} mm differ by up to {relative:.3g} "
                        f"relative (tolerance {SPACING_RTOL:g})")
    both = a.axes is not None and b.axes is not None
    if both:
        cosines = float(np.max(np.abs(a.axes - b.axes)))
        if cosines > DIRECTION_ATOL:
            pa, pb = _pair(a.axes.T, b.axes.T)
            problems.append(f"axis directions (unit x, y, z voxel axes in RAS, row by row) {pa} "
                            f"and {pb} differ by up to {cosines:.3g} (tolerance "
                            f"{DIRECTION_ATOL:g})")
    # in the world when both orientations are known, else along the voxel axes (as napari
    # draws them: a layer computed in the viewer has its source's translate, no orientation)
    oa, ob = ((a.origin, b.origin) if both else
              (np.asarray(a.translate, dtype=float), np.asarray(b.translate, dtype=float)))
    distance = float(np.linalg.norm(oa - ob))
    voxel = float(min(sa.min(), sb.min()))
    if distance > ORIGIN_VOXELS * voxel:
        where = "origin (x, y, z) RAS" if both else "origin (z, y, x; napari translate)"
        pa, pb = _pair(oa, ob)
        problems.append(f"{where} {pa} and {pb} mm are {distance:.3g} mm apart "
                        f"({distance / voxel:.3g} of a {voxel:g} mm voxel; tolerance "
                        f"{ORIGIN_VOXELS:g} of a voxel)")
    if not problems:
        return None
    return f"{na} and {nb} do not overlay: {'; '.join(problems)}. {FIX}"


def same_grid(first: Any, second: Any) -> bool:
    """Whether two volumes (Volume, napari layer or Grid) lie on one grid within the
    tolerances of this module."""
    return grid_difference(first, second) is None


def check_same_grid(first: Any, second: Any, names: tuple[str, str] | None = None,
                    *, shape: bool = True) -> None:
    """Raise a :class:`XaimedError` unless ``first`` and ``second`` lie on one grid.

    Same shape, spacing within :data:`SPACING_RTOL` (relative), directions within
    :data:`DIRECTION_ATOL` and origins within :data:`ORIGIN_VOXELS` of a voxel; see the module
    docstring and :func:`grid_difference` for the arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_xaimed.io.grid import Grid, check_same_grid
    >>> ref = Grid((17, 512, 512), (3.3, 0.586, 0.586), (-12.0, -202.2573, -153.2694))
    >>> pred = Grid((17, 512, 512), (3.3, 0.586, 0.586), (-12.0, -202.2566, -153.2688))
    >>> check_same_grid(ref, pred)  # 0.0009 mm apart: float noise, one grid
    """
    message = grid_difference(first, second, names, shape=shape)
    if message is not None:
        raise XaimedError(message)


def relative_rotation_degrees(first: Grid, second: Grid) -> float:
    """The angle (degrees) of the rotation between two grids' voxel axes (0 when unknown)."""
    if first.axes is None or second.axes is None:
        return 0.0
    cosine = (np.trace(first.axes.T @ second.axes) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def orientation_between(volume: Any, reference: Any) -> np.ndarray | None:
    """The flips and permutation (a nibabel orientation transform, ``(3, 2)``, in
    ``(i, j, k)`` order) that bring ``volume``'s voxel axes closest to ``reference``'s, or None
    when they already follow them."""
    from nibabel.orientations import io_orientation, ornt_transform

    ornt = ornt_transform(io_orientation(np.asarray(volume.affine, dtype=float)),
                          io_orientation(np.asarray(reference.affine, dtype=float)))
    return None if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]) else ornt


def reorient(data: Any, spacing: Sequence[float], ornt: Any) -> tuple[Any, tuple[float, ...]]:
    """``(z, y, x)`` voxels and spacing flipped and permuted by a nibabel orientation transform
    (see :func:`orientation_between`): a view, and a dask array stays lazy."""
    ornt = np.asarray(ornt)
    ijk = data.transpose(2, 1, 0)  # nibabel's (i, j, k) order
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            ijk = ijk[(slice(None),) * axis + (slice(None, None, -1),)]
    order = [int(a) for a in np.argsort(ornt[:, 0])]
    spacing_ijk = np.asarray(spacing, dtype=float)[::-1][order]
    return (ijk.transpose(*order).transpose(2, 1, 0),
            tuple(float(s) for s in spacing_ijk[::-1]))


def orient_like(volume: Any, reference: Any) -> Any:
    """``volume`` with its voxel axes flipped and permuted to follow ``reference``'s.

    Only whole flips and permutations (no interpolation): the voxels are the same, read in
    another order (a view; a dask array stays lazy), and the affine follows, so every voxel
    keeps its world position. A volume already oriented like the reference is returned as is.

    Parameters
    ----------
    volume, reference : Volume
        3D volumes (``.data``, ``.spacing``, ``.affine``).

    Returns
    -------
    Volume
    """
    from nibabel.orientations import inv_ornt_aff

    ornt = orientation_between(volume, reference)
    if ornt is None:
        return volume
    data, spacing = reorient(volume.data, volume.spacing, ornt)
    affine = np.asarray(volume.affine, dtype=float) @ inv_ornt_aff(
        ornt, tuple(np.shape(volume.data)[::-1]))
    return replace(volume, data=data, spacing=spacing, affine=affine)


def orient_for_registration(moving: Any, fixed: Any, names: tuple[str, str] = (
        "the moving image", "the fixed image")) -> tuple[Any, np.ndarray | None]:
    """``moving`` on voxel axes parallel to ``fixed``'s, as registration needs, and the
    orientation transform applied (None when none was needed).

    :func:`~napari_xaimed.registration.register` places each image by its spacing and origin
    along its own voxel axes (napari ``scale`` and ``translate``), which is the world only when
    both images' axes point the same way. Whole flips and permutations are undone exactly
    (:func:`orient_like`); an oblique rotation between the two cannot be, and is refused.

    Raises
    ------
    XaimedError
        When the axes still differ by more than :data:`DIRECTION_ATOL` after flips and
        permutations.
    """
    ornt = orientation_between(moving, fixed)
    oriented = orient_like(moving, fixed)
    a, b = grid_of(fixed), grid_of(oriented)
    assert a.axes is not None and b.axes is not None
    if float(np.max(np.abs(a.axes - b.axes))) > DIRECTION_ATOL:
        pa, pb = _pair(b.axes.T, a.axes.T)
        raise XaimedError(
            f"{names[0]} is rotated by {relative_rotation_degrees(a, b):.3g} degrees against "
            f"{names[1]} (unit x, y, z voxel axes in RAS, row by row: {pa} and {pb}): the "
            "registration places both images by spacing and origin along the fixed image's "
            "voxel axes, so it cannot start from that rotation. Resample the moving image onto "
            "axes parallel to the fixed image's first (e.g. SimpleITK's Resample with the fixed "
            "image's direction).")
    return oriented, ornt
