"""Segmentation dock widget: an Image layer into Labels (and class probability Images).

The form shows the chosen method's parameters only (:data:`~napari_xaimed.segmentation.METHODS`
says which it takes): the classical section and the model section are built in
:mod:`._segmentation_fields`, the output layers in :mod:`._segmentation_output` and the runs on
lazy layers in :mod:`._segmentation_lazy`. Segment runs the core in a worker (ANTs methods in
their own process, so Cancel kills them); Preview shows the classical methods on the current
slice at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, PushButton
from napari.layers import Image

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import PendingInputs
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.models.loading import BUNDLED_SEGMENTER
from napari_xaimed.segmentation import METHODS, SegmentationResult, method_params, segment_steps
from napari_xaimed.viewer.heatmaps import watch
from napari_xaimed.viewer.layers import source_geometry
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._legend import Legend
from napari_xaimed.viewer.widgets._segmentation_fields import (
    NO_SPLIT,
    classical_fields,
    model_fields,
    model_paths,
)
from napari_xaimed.viewer.widgets._segmentation_lazy import LazySegmentation
from napari_xaimed.viewer.widgets._segmentation_output import (
    SegmentationOutputs,
    probability_name,
    segmentation_name,
)
from napari_xaimed.viewer.widgets._trust import TrustedModels

# Imported with the widget, not on the first model run: importing MONAI holds the GIL for
# ~0.3 s of C-extension loading, which froze the viewer mid-job (bench_responsiveness.py).
import monai.inferers  # noqa: E402, F401  isort: skip
from napari_xaimed.segmentation.preview import preview_slice
from napari_xaimed.segmentation.tissue import DEFAULT_MRF, prewarm

__all__ = ["NO_SPLIT", "SegmentationWidget", "probability_name", "segmentation_name"]


class SegmentationWidget(LazySegmentation, SegmentationOutputs, XaimedWidget):
    """Pick an image and a method; the labels land as ``"<Method> segmentation [<image>]"``
    (``"Otsu segmentation [ct]"``), one layer per method, with a legend of their classes.

    Otsu starts at 3 classes, keeping the brightest: the bright structures (lesions, contrast,
    bone) rather than the body against the air, which 2 classes find.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        watch(napari_viewer)  # every heatmap here gets its colour bar and title
        self.image = layer_picker(napari_viewer, Image, "image")
        self.method = ComboBox(label="method", choices=list(METHODS), value="otsu")
        self.threshold_by = ComboBox(label="threshold by", choices=["value", "percentile"],
                                     value="value")
        self._fields = {**classical_fields(napari_viewer), **model_fields()}
        fields = self._fields
        self.value, self.percentile = fields["value"], fields["percentile"]
        self.classes, self.n_classes = fields["classes"], fields["n_classes"]
        self.tissue_mask, self.mrf = fields["mask"], fields["mrf"]
        self.iterations, self.reproducible = fields["iterations"], fields["reproducible"]
        self.smoothing, self.opening = fields["smoothing_mm"], fields["opening_mm"]
        self.fill_holes, self.instances = fields["fill_holes"], fields["instances"]
        self.min_size, self.connectivity = fields["min_size_mm3"], fields["connectivity"]
        self.split, self.min_distance = fields["split"], fields["min_distance_mm"]
        self.model_source, self.roi_size = fields["model"], fields["roi_size"]
        self.overlap, self.blend = fields["overlap"], fields["blend"]
        self.sw_batch_size, self.output = fields["sw_batch_size"], fields["output"]
        self.model_threshold, self.largest = fields["threshold"], fields["largest_component"]
        self.device = fields["device"]
        self.model_file, self.model_folder = model_paths()
        self.preview_button = PushButton(text="Preview slice")
        self.form.extend([self.image, self.method, self.threshold_by, *self._fields.values(),
                          self.model_file, self.model_folder, self.preview_button])
        for widget in (self.method, self.threshold_by, self.split, self.instances,
                       self.model_source, self.output):
            widget.changed.connect(self._show_method_fields)
        self.method.changed.connect(self._default_mrf)
        self.reproducible.changed.connect(self._prewarm)
        self.image.changed.connect(self.update_info)
        self.preview_button.changed.connect(self.preview)
        self.job = JobPanel("Segment")
        self._layout.addWidget(self.job)
        self.job.run_button.clicked.connect(self.run)
        self.job.finished.connect(self._prewarm)
        self.legend = Legend()
        self._layout.addWidget(self.legend)
        # (source, method) -> probability layers shown
        self._probabilities: dict[tuple[str, str], list[str]] = {}
        # a lazy layer's Otsu threshold, kept between previews: (data, method, classes, value)
        self._lazy_thresholds: dict[tuple, float] = {}
        self.trusted = TrustedModels()
        self._show_method_fields()
        self.reset_choices()

    def _default_mrf(self, *_: Any) -> None:
        if self.method.value in DEFAULT_MRF:
            self.mrf.value = DEFAULT_MRF[self.method.value]
            self._prewarm()

    def _prewarm(self, *_: Any) -> None:
        """Have a process with ANTs imported wait for the next kmeans/atropos run."""
        if self.method.value in DEFAULT_MRF:
            prewarm(bool(self.reproducible.value))

    def _show_method_fields(self, *_: Any) -> None:
        method = self.method.value
        accepted = set(method_params(method))
        for name, widget in self._fields.items():
            widget.visible = name in accepted
        by_value = self.threshold_by.value == "value"
        self.threshold_by.visible = method == "threshold"
        self.value.visible = method == "threshold" and by_value
        self.percentile.visible = method == "threshold" and not by_value
        labelled = "instances" in accepted and self.instances.value
        for widget in (self.min_size, self.connectivity, self.split):
            widget.visible = labelled
        self.min_distance.visible = labelled and self.split.value == "watershed"
        self.preview_button.visible = METHODS[method].cheap
        self.model_file.visible = method == "model" and self.model_source.value == "file"
        self.model_folder.visible = method == "model" and self.model_source.value == "folder"
        self.model_threshold.visible = method == "model" and self.output.value == "sigmoid"

    def update_info(self, *_: Any) -> None:
        self.info.value = describe_layer(self.image.value)
        if self.image.value is not getattr(self, "_described", None):
            self._described = self.image.value
            if hasattr(self, "legend") and not self.job.running:  # another image: stale
                self.legend.clear()
                self.job.status.setText("")

    def params(self) -> dict[str, Any]:
        """The parameters the current form gives the chosen method (mask as an array)."""
        method = self.method.value
        params: dict[str, Any] = {}
        for name in method_params(method):
            widget = self._fields.get(name)
            if widget is None:  # not offered in the form (scripts can pass it)
                continue
            if name == "model":
                params[name] = self.chosen_model(BUNDLED_SEGMENTER, "the bundled segmenter")
            elif name in ("roi_size", "sw_batch_size"):
                params[name] = widget.value or None  # 0: chosen from the model and memory
            elif name == "threshold" and self.output.value != "sigmoid":
                continue
            elif name == "mask":
                params[name] = None if widget.value is None else np.asarray(widget.value.data)
            elif name == "split":
                params[name] = None if widget.value == NO_SPLIT else widget.value
            else:
                params[name] = widget.value
        if method == "threshold":
            params.pop("percentile" if self.threshold_by.value == "value" else "value")
        return params

    def _layer(self) -> Any:
        layer = self.image.value
        if layer is None:
            raise XaimedError("Add or open an Image layer first.")
        return layer


    def preview(self, *_: Any) -> None:
        """The chosen classical method on the current slice, as ``"Segmentation preview [...]"``."""
        try:
            layer = self._layer()
            spacing, translate = source_geometry(layer)
            world_z = self.viewer.dims.point[-3]
            z = int(np.clip(round((world_z - translate[0]) / spacing[0]), 0,
                            layer.data.shape[-3] - 1))
            if is_lazy(layer.data):
                self._preview_lazy(layer, z, spacing, translate)
                return
            mask = preview_slice(np.asarray(layer.data), z, self.method.value, spacing,
                                 **self.params())
        except XaimedError as exc:
            report_error(exc)
            return
        self._show_preview(layer, z, mask, spacing, translate)


    def _plain_params(self) -> dict[str, Any]:
        params = self.params()
        if "mask" in params:
            params["mask"] = None if self.tissue_mask.value is None else self.tissue_mask.value.name
        return params

    def run(self) -> None:
        """Segment the chosen image in a worker; add or update the output layers when done."""
        try:
            layer = self._layer()
            params = self.params()
            if "mask" in params:
                check_same_grid(layer, self.tissue_mask.value)
        except XaimedError as exc:
            report_error(exc)
            return
        spacing, translate = source_geometry(layer)
        method, shown = self.method.value, self._plain_params()
        retry = None
        if method == "model":  # a file whose code the user let run before, as it is now
            params["trust"] = self.trusted.trusts(params["model"])
            retry = self.trusted.retry(self.run)
        # where the voxels came from (file or sample) and their SHA-256, for a rerun
        data = layer.data
        if is_lazy(data):
            self._run_lazy(layer, data, method, params, shown, spacing, translate, retry)
            return
        inputs = PendingInputs(image=layer, mask=self.tissue_mask.value if "mask" in params
                               else None)

        def steps():
            inputs.complete()  # the SHA-256 of a CT-sized layer: here, not in the GUI thread
            return (yield from segment_steps(data, method, spacing=spacing, **params))

        def done(result: SegmentationResult, seconds: float) -> None:
            self._show_result(result, layer.name, spacing, translate, shown, seconds,
                              inputs.records)

        self.job.start(steps(), done, f"Segmenting {layer.name} ({method})",
                       retry_trusted=retry)

