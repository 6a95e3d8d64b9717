"""Input checks shared by the core functions; each failure names the fix."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError


def _available_memory() -> int | None:
    """Bytes of memory available now (None when the system does not say)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or failing: the POSIX page counts
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            return None


def check_fits_in_memory(array: Any, name: str = "volume") -> None:
    """Raise a :class:`XaimedError` when a chunked array read lazily is too big to read whole.

    The in-memory functions read their inputs whole (and convert them to float). For a dask or
    Zarr array larger than half the memory available now, that read would swap the machine or
    get the process killed, losing a napari session's work; the error names the functions for
    volumes larger than memory instead. numpy arrays (and memory maps) are not checked.

    Parameters
    ----------
    array : array-like
    name : str
        What the array is, for the message.
    """
    if isinstance(array, np.ndarray) or not hasattr(array, "chunks"):
        return
    nbytes = int(getattr(array, "nbytes", 0) or 0)
    available = _available_memory()
    if available is None or nbytes <= available // 2:
        return
    shape = "×".join(str(int(n)) for n in getattr(array, "shape", ()))
    raise XaimedError(
        f"{name} is read lazily ({shape}, {_size(nbytes)}) and is larger than half the memory "
        f"available ({_size(available)}): reading it whole would exhaust "
        "memory. Use the functions for volumes larger than memory (segment_lazy, "
        "evaluate_lazy, attribute_lazy, register_lazy, case_embedding), or a crop "
        "(data[z0:z1]).")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def as_volume(array: Any, name: str = "volume", *, allow_nan: bool = False) -> np.ndarray:
    """Return ``array`` as a 3D numpy array or raise a :class:`XaimedError` that says why not."""
    check_fits_in_memory(array, name)
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
