"""Input checks shared by the core functions; each failure names the fix."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._errors import XaimedError


def as_volume(array: Any, name: str = "volume", *, allow_nan: bool = False) -> np.ndarray:
    """Return ``array`` as a 3D numpy array or raise a :class:`XaimedError` that says why not."""
    arr = np.asarray(array)
    if arr.ndim != 3:
        hint = (
            "pick one channel or time point (e.g. data[0])"
            if arr.ndim > 3
            else "a 2D image needs a z axis (data[np.newaxis])"
        )
        raise XaimedError(f"{name} must be a 3D (z, y, x) volume, got shape {arr.shape}: {hint}.")
    if arr.size == 0:
        raise XaimedError(f"{name} is empty (shape {arr.shape}).")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise XaimedError(f"{name} must be numeric, got dtype {arr.dtype}.")
    if not allow_nan and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise XaimedError(
            f"{name} contains {bad} NaN or infinite voxels: replace them (e.g. np.nan_to_num) or "
            "mask them out first."
        )
    return arr


def _three_mm(value: Any, name: str, default: float, positive: bool
              ) -> tuple[float, float, float]:
    """Three finite mm values ``(z, y, x)`` (all ``default`` for None), positive if asked."""
    if value is None:
        return (default,) * 3
    try:
        values = tuple(float(v) for v in np.ravel(value))
    except (TypeError, ValueError) as exc:
        raise XaimedError(f"{name} must be three numbers in mm, got {value!r}.") from exc
    if len(values) != 3 or not all(np.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive" if positive else "finite"
        raise XaimedError(f"{name} must be three {kind} numbers in mm (z, y, x), got {value!r}.")
    return values  # type: ignore[return-value]


def as_spacing(spacing: Any, name: str = "spacing") -> tuple[float, float, float]:
    """Three positive finite millimetre values in ``(z, y, x)`` order (None means 1 mm)."""
    return _three_mm(spacing, name, 1.0, positive=True)


def as_origin(origin: Any, name: str = "origin") -> tuple[float, float, float]:
    """Three finite mm values ``(z, y, x)``: the world position of voxel ``(0, 0, 0)`` (napari's
    ``translate``); None means 0."""
    return _three_mm(origin, name, 0.0, positive=False)
