"""Panoptic evaluation dock widget: reference and prediction Labels layers.

The matching and metrics arrive with the evaluation capability; until then the widget picks the
two layers and says whether they can be compared (same grid), which is all it can do honestly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels

from napari_xaimed._widgets._base import XaimedWidget, describe_layer, layer_picker


def grid_check(reference: Any, prediction: Any) -> str:
    """Whether two layers share one voxel grid, as evaluation needs, and what to do if not."""
    if reference is None or prediction is None:
        return "Pick a reference and a prediction Labels layer."
    if reference is prediction:
        return "Reference and prediction are the same layer: pick two different ones."
    if reference.data.shape != prediction.data.shape:
        return (f"Shapes differ ({reference.data.shape} vs {prediction.data.shape}): resample the "
                "prediction onto the reference grid first.")
    if not np.allclose(reference.scale, prediction.scale, rtol=1e-4):
        return (f"Spacings differ ({tuple(reference.scale)} vs {tuple(prediction.scale)} mm): "
                "they must be on the same grid.")
    return f"Same grid: {describe_layer(reference)}."


class EvaluationWidget(XaimedWidget):
    """Reference/prediction pickers and a grid check."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.reference = layer_picker(napari_viewer, Labels, "reference")
        self.prediction = layer_picker(napari_viewer, Labels, "prediction")
        self.form.extend([self.reference, self.prediction])
        self.reference.changed.connect(self.update_info)
        self.prediction.changed.connect(self.update_info)
        self.reset_choices()
        labels = [layer for layer in napari_viewer.layers if isinstance(layer, Labels)]
        if len(labels) >= 2:
            self.prediction.value = labels[1]

    def update_info(self, *_: Any) -> None:
        self.info.value = grid_check(self.reference.value, self.prediction.value)
