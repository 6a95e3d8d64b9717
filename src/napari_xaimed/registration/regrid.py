"""A volume resampled onto another grid of the same world: what the grid checks advise when two
volumes do not overlay voxel by voxel.

No registration: each voxel centre of the reference grid takes the volume's value at the same
world position (spacing and origin along the voxel axes, as napari places layers), by
:func:`~napari_xaimed.registration.fields.resample` with no displacement. Nearest neighbour
keeps label values; linear suits images. Grids whose voxel axes point different ways (another
orientation, an oblique scan) are refused: their voxel-axis worlds are not one world.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.grid import DIRECTION_ATOL, Grid, grid_of
from napari_xaimed.registration.fields import resample

INTERPOLATIONS = ("linear", "nearest")


def resample_onto(data: Any, grid: Any, reference: Any, *, interpolation: str = "linear",
                  fill: float = 0.0) -> np.ndarray:
    """``data``, on ``grid``, resampled onto the ``reference`` grid.

    Parameters
    ----------
    data : array-like
        3D ``(z, y, x)`` volume (a lazy array is read whole).
    grid, reference : Volume, napari layer or :class:`~napari_xaimed.io.grid.Grid`
        Where ``data`` lies, and the grid to resample it onto (shape, spacing and origin).
    interpolation : {"linear", "nearest"}
        ``"nearest"`` for label maps (values kept), ``"linear"`` for images.
    fill : float
        Value of the reference voxels outside ``data``.

    Returns
    -------
    numpy.ndarray
        The reference grid's shape; float32 for linear, ``data``'s dtype for nearest.

    Raises
    ------
    XaimedError
        For a volume that is not 3D or not of ``grid``'s shape, an unknown interpolation, or
        grids whose voxel axes point different ways.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_xaimed.io.grid import Grid
    >>> coarse = Grid((2, 2, 2), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    >>> fine = Grid((3, 3, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    >>> ramp = np.arange(2.0)[:, None, None] * np.ones((2, 2, 2))
    >>> resample_onto(ramp, coarse, fine)[:, 0, 0].tolist()  # z = 0, 1, 2 mm
    [0.0, 0.5, 1.0]
    """
    if interpolation not in INTERPOLATIONS:
        raise XaimedError(f"interpolation must be one of {INTERPOLATIONS}, got "
                          f"{interpolation!r}.")
    source, target = grid_of(grid), grid_of(reference)
    array = np.asarray(data)
    if array.ndim != 3 or tuple(array.shape) != tuple(source.shape):
        raise XaimedError(f"the volume to resample has shape {array.shape}, its grid "
                          f"{tuple(source.shape)}: pass a 3D volume with the grid it lies on.")
    _check_axes(source, target)
    return resample(array, tuple(target.shape), None, fixed_spacing=target.spacing,
                    fixed_origin=target.translate, moving_spacing=source.spacing,
                    moving_origin=source.translate, interpolation=interpolation, fill=fill)


def _check_axes(source: Grid, target: Grid) -> None:
    if source.axes is None or target.axes is None:
        return  # placed along their voxel axes, as napari draws them
    difference = float(np.max(np.abs(source.axes - target.axes)))
    if difference > DIRECTION_ATOL:
        raise XaimedError(
            f"the volume's voxel axes and the reference's point different ways (direction "
            f"cosines differ by up to {difference:.3g}): resampling along the voxel axes would "
            "misplace it. Resample it with its full affine instead (e.g. SimpleITK's Resample "
            "with the reference image as the reference), or reorient both files alike first.")
