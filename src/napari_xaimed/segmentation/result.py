"""What a segmentation returns: labels, optional class probabilities, and the facts found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class SegmentationResult:
    """A segmentation's outputs, on the input volume's grid.

    Attributes
    ----------
    labels : numpy.ndarray
        Instance labels (``"mask"`` methods with ``instances=True``), a 0/1 mask
        (``instances=False``) or class labels ``1..n`` (``"classes"`` methods; 0 outside
        their mask).
    method : str
        The method's name.
    params : dict
        Every parameter used, defaults included.
    facts : dict
        What the method found: thresholds, instance counts, class means and sizes.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    kind : str
        ``"instances"``, ``"mask"`` or ``"classes"``: what the label values mean.
    probabilities : numpy.ndarray or None
        float32 ``(n_classes, z, y, x)`` class probabilities, index ``k`` for label ``k + 1``
        (kmeans and atropos); for ``"model"`` one map, the foreground probability
        (``facts["probabilities"] == "foreground"``); None for methods without them.
    seconds : float
        Wall time.
    """

    labels: np.ndarray
    method: str
    params: dict[str, Any]
    facts: dict[str, Any]
    spacing: tuple[float, float, float]
    kind: str = "instances"
    probabilities: np.ndarray | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Everything but the arrays (JSON-serialisable via ``_provenance``)."""
        return {"method": self.method, "params": self.params, "facts": self.facts,
                "spacing": list(self.spacing), "kind": self.kind,
                "n_labels": int(self.labels.max()) if self.labels.size else 0,
                "probabilities": None if self.probabilities is None else
                list(self.probabilities.shape), "seconds": self.seconds}
