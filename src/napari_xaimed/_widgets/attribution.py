"""Attribution dock widget: the Image layer whose model decision is to be explained.

Model loading and the attribution methods arrive with the attribution capability; until then the
widget picks the volume and shows its grid.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image

from napari_xaimed._widgets._base import XaimedWidget, describe_layer, layer_picker


class AttributionWidget(XaimedWidget):
    """Image picker and a summary of its grid."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image = layer_picker(napari_viewer, Image, "image")
        self.form.append(self.image)
        self.image.changed.connect(self.update_info)
        self.reset_choices()

    def update_info(self, *_: Any) -> None:
        self.info.value = describe_layer(self.image.value)
