"""Grids and orientation, as documented under ``napari_xaimed.grid``; the code lives in
:mod:`napari_xaimed.io.grid`."""

from napari_xaimed.io.grid import (
    DIRECTION_ATOL,
    FIX,
    ORIGIN_VOXELS,
    SPACING_RTOL,
    Grid,
    XaimedError,
    check_same_grid,
    grid_difference,
    grid_of,
    orient_for_registration,
    orient_like,
    orientation_between,
    relative_rotation_degrees,
    reorient,
    same_grid,
)

__all__ = [
    "DIRECTION_ATOL", "FIX", "ORIGIN_VOXELS", "SPACING_RTOL", "Grid", "XaimedError",
    "check_same_grid", "grid_difference", "grid_of", "orient_for_registration", "orient_like",
    "orientation_between", "relative_rotation_degrees", "reorient", "same_grid",
]
