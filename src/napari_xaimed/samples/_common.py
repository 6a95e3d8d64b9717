"""What the sample generators share: the geometry types and checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

Shape3 = tuple[int, int, int]


Spacing3 = tuple[float, float, float]


def _check_geometry(shape: Any, spacing: Any, minimum: int = 16) -> tuple[Shape3, Spacing3]:
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < minimum:
        raise XaimedError(f"shape must be three sizes of at least {minimum} voxels, got {shape}.")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise XaimedError(f"spacing must be three positive numbers (mm), got {spacing}.")
    return shape, spacing  # type: ignore[return-value]
