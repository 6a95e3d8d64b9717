"""What kind of array a value is, asked by every layer (provenance, io, the widgets)."""

from __future__ import annotations

from typing import Any


def is_lazy(array: Any) -> bool:
    """Whether ``array`` is a lazy (dask) array rather than one held in memory."""
    return hasattr(array, "dask") and hasattr(array, "compute")
