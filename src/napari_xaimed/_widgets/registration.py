"""Registration dock widget: fixed and moving Image layers.

ANTs registration arrives with the registration capability; until then the widget picks the two
volumes and shows their grids (which may differ: registration resamples moving onto fixed).
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image

from napari_xaimed._widgets._base import XaimedWidget, describe_layer, layer_picker


class RegistrationWidget(XaimedWidget):
    """Fixed/moving pickers and a summary of their grids."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.fixed = layer_picker(napari_viewer, Image, "fixed")
        self.moving = layer_picker(napari_viewer, Image, "moving")
        self.form.extend([self.fixed, self.moving])
        self.fixed.changed.connect(self.update_info)
        self.moving.changed.connect(self.update_info)
        self.reset_choices()
        images = [layer for layer in napari_viewer.layers if isinstance(layer, Image)]
        if len(images) >= 2:
            self.moving.value = images[1]

    def update_info(self, *_: Any) -> None:
        self.info.value = (f"fixed: {describe_layer(self.fixed.value)}\n"
                           f"moving: {describe_layer(self.moving.value)}")
