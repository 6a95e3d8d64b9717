"""Baselines and shared argument checks of the attribution methods: the reference input of the
path and perturbation methods (``zeros``, the input's ``min``, a ``blurred`` copy or a number).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError

BASELINES = ("zeros", "min", "blurred")


def baseline_tensor(x: torch.Tensor, kind: Any) -> torch.Tensor | float:
    """``zeros``, the input's ``min``, a ``blurred`` copy (Gaussian, sigma 5 voxels) or a
    number."""
    if isinstance(kind, int | float):
        return float(kind)
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "min":
        return torch.full_like(x, float(x.min()))
    from scipy import ndimage as ndi

    blurred = ndi.gaussian_filter(x.detach().cpu().numpy(), sigma=(0, 0, 5, 5, 5))
    return torch.from_numpy(blurred).to(x.device, x.dtype)


def _scalar_baseline(x: torch.Tensor, kind: Any) -> float:
    if isinstance(kind, int | float):
        return float(kind)
    if kind == "min":
        return float(x.min())
    if kind == "zeros":
        return 0.0
    raise XaimedError("occlusion and ablation take a constant baseline: zeros, min or a "
                      "number.")


def _triple(value: Any, name: str, cast: Callable = int) -> tuple:
    values = (value,) * 3 if np.isscalar(value) else tuple(value)
    if len(values) != 3:
        raise XaimedError(f"{name} must be one number or three (z, y, x), got {value!r}.")
    return tuple(cast(v) for v in values)
