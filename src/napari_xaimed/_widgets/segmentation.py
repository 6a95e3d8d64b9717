"""Segmentation dock widget: threshold or Otsu an Image layer into instance Labels."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, FloatSpinBox, SpinBox
from napari.layers import Image

from napari_xaimed._layers import add_or_update, labels_layer, output_name, source_geometry
from napari_xaimed._provenance import provenance
from napari_xaimed._widgets._base import XaimedWidget, describe_layer, layer_picker
from napari_xaimed._widgets._job import JobPanel, report_error
from napari_xaimed.segmentation import METHODS, segment_steps


class SegmentationWidget(XaimedWidget):
    """Pick an image and a method; the labels land as ``"Segmentation [<image>]"``."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image = layer_picker(napari_viewer, Image, "image")
        self.method = ComboBox(label="method", choices=sorted(METHODS), value="otsu")
        self.classes = SpinBox(label="Otsu classes", value=2, min=2, max=5,
                               tooltip="More than 2: keep the brightest multi-Otsu class")
        self.value = FloatSpinBox(label="threshold", value=0.5, min=-1e6, max=1e6, step=0.05)
        self.smoothing = FloatSpinBox(label="smoothing (mm)", value=0.0, min=0.0, max=20.0, step=0.5)
        self.min_size = FloatSpinBox(label="min size (mm³)", value=0.0, min=0.0, max=1e7, step=10.0)
        self.connectivity = ComboBox(label="connectivity", choices=[6, 18, 26], value=26)
        self.form.extend([self.image, self.method, self.classes, self.value, self.smoothing,
                          self.min_size, self.connectivity])
        self.method.changed.connect(self._show_method_fields)
        self.image.changed.connect(self.update_info)
        self.job = JobPanel("Segment")
        self._layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.run)
        self._show_method_fields()
        self.reset_choices()

    def _show_method_fields(self, *_: Any) -> None:
        self.classes.visible = self.method.value == "otsu"
        self.value.visible = self.method.value == "threshold"

    def update_info(self, *_: Any) -> None:
        self.info.value = describe_layer(self.image.value)

    def params(self) -> dict[str, Any]:
        """The parameters the current form gives the chosen method."""
        params: dict[str, Any] = {
            "smoothing_mm": self.smoothing.value,
            "min_size_mm3": self.min_size.value,
            "connectivity": self.connectivity.value,
        }
        if self.method.value == "otsu":
            params["classes"] = self.classes.value
        else:
            params["value"] = self.value.value
        return params

    def run(self) -> None:
        """Segment the chosen image in a worker; add or update the output layer when done."""
        layer = self.image.value
        if layer is None:
            report_error(ValueError("Add or open an Image layer first."))
            return
        spacing, translate = source_geometry(layer)
        method, params = self.method.value, self.params()
        steps = segment_steps(layer.data, method, spacing=spacing, **params)

        def done(result: Any, seconds: float) -> None:
            prov = provenance("segmentation", sources=[layer.name],
                              params={"method": method, **params, **result.facts},
                              seconds=seconds)
            add_or_update(self.viewer, labels_layer(
                result.labels, output_name("Segmentation", layer.name), spacing,
                translate=translate, provenance=prov))

        self.job.start(steps, done, f"Segmenting {layer.name}")
