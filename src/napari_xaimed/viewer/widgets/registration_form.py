"""What the registration and longitudinal forms turn into call arguments: iterations typed as
text and landmark layers in world millimetres."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError


def parse_iterations(text: str) -> tuple[int, ...] | None:
    """``"40, 20, 0"`` -> ``(40, 20, 0)``; empty -> None (ANTs' default)."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError as exc:
        raise XaimedError(f"iterations must be whole numbers per level, coarse to fine, e.g. "
                          f"'40, 20, 0'; got {text!r}.") from exc


def world_points(layer: Any) -> np.ndarray:
    """A Points layer's points in world mm (z, y, x)."""
    data = np.asarray(layer.data, dtype=np.float64)[:, -3:]
    return data * np.asarray(layer.scale[-3:]) + np.asarray(layer.translate[-3:])
