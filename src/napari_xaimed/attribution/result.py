"""The result of every attribution method: one :class:`Attribution` map on the volume's grid and
how it was made (the gradient, CAM, perturbation, attention and lazy families all return it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Attribution:
    """One attribution map on the volume's grid and how it was made.

    Attributes
    ----------
    map : numpy.ndarray
        float32, the volume's shape.
    method : str
    signed : bool
        Whether the map's sign means something (diverging colormap) or not.
    target : int or None
        The explained class (classifier) or channel (segmentation model).
    params : dict
        The method's parameters, the preprocessing and the target details.
    scores : list of float
        The model's output for the volume (class scores; for a region target, the summed
        logit).
    seconds : float
    device : str
    model : dict
        Source and SHA-256 of the model.
    """

    map: np.ndarray
    method: str
    signed: bool
    target: int | None
    params: dict[str, Any] = field(default_factory=dict)
    scores: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)
