"""What a segmentation returns: labels, optional class probabilities, and the facts found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


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


@dataclass
class ModelSegmentation:
    """A model's segmentation of a volume and how it was made.

    Attributes
    ----------
    labels : numpy.ndarray
        uint8 (uint16 beyond 255 classes) labels with the volume's shape: the argmax class
        (softmax), or the channel above ``threshold`` (sigmoid); with ``channel`` given, 0/1.
    probability : numpy.ndarray
        float32 foreground probability with the volume's shape: 1 - P(background) (softmax),
        the highest channel probability (sigmoid), or the chosen channel's probability.
    classes : list of str
        The model's class names, when its config gives them.
    params : dict
        Every setting used (the sliding-window batch size after any out-of-memory halving).
    windows : int
        Number of sliding windows run.
    seconds : float
    device : str
    model : dict
        Source, SHA-256 and class of the model.
    """

    labels: np.ndarray
    probability: np.ndarray
    classes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    windows: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    model: dict[str, Any] = field(default_factory=dict)

    def provenance(self, sources: Sequence[str] = ()) -> dict[str, Any]:
        """The ``metadata["xaimed"]`` dict for the labels and probability layers."""
        from napari_xaimed._core.provenance import provenance

        return provenance("segmentation", sources=sources, params={"method": "model",
                                                                   **self.params},
                          seconds=self.seconds, device=self.device, model=self.model,
                          classes=self.classes, windows=self.windows)


def keep_largest(labels: torch.Tensor) -> torch.Tensor:
    from monai.transforms import KeepLargestConnectedComponent
    from monai.utils import convert_to_tensor

    present = [int(v) for v in torch.unique(labels) if int(v) != 0]
    if not present:
        return labels
    kept = KeepLargestConnectedComponent(applied_labels=present, is_onehot=False,
                                         independent=True)(labels[None])
    return convert_to_tensor(kept, track_meta=False)[0]


@dataclass
class LazySegmentation:
    """What :func:`~napari_xaimed.segmentation.lazy.segment_lazy` returns.

    Attributes
    ----------
    labels : dask.array.Array
        Instance labels ``1..n`` (uint32; a 0/1 mask with ``instances=False``) over the Zarr
        store at ``path``.
    path : pathlib.Path
    method : str
    threshold : float
        The threshold used (voxels strictly above it are foreground).
    n_instances : int
    spacing : tuple of float
    params : dict
    seconds : float
    """

    labels: Any
    path: Path
    method: str
    threshold: float
    n_instances: int
    spacing: tuple[float, float, float]
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
