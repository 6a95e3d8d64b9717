"""Segmentation dock widget: an Image layer into Labels (and class probability Images).

The form shows the chosen method's parameters only (:data:`~napari_xaimed.segmentation.METHODS`
says which it takes). Segment runs the core in a worker (ANTs methods in their own process, so
Cancel kills them); Preview shows the classical methods on the current slice at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, PushButton, SpinBox
from napari.layers import Image, Labels

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.models.loading import BUNDLED_SEGMENTER
from napari_xaimed.segmentation import METHODS, SegmentationResult, method_params, segment_steps
from napari_xaimed.viewer.layers import (
    add_or_update,
    heatmap_layer,
    labels_layer,
    output_name,
    source_geometry,
)
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._scratch import keep_while_shown, scratch_folder
from napari_xaimed.viewer.widgets._trust import TrustedModels

# Imported with the widget, not on the first model run: importing MONAI holds the GIL for
# ~0.3 s of C-extension loading, which froze the viewer mid-job (bench_responsiveness.py).
import monai.inferers  # noqa: E402, F401  isort: skip
from napari_xaimed.segmentation.lazy import check_dask_segmentation
from napari_xaimed.segmentation.preview import preview_slice, preview_slice_lazy
from napari_xaimed.segmentation.tissue import DEFAULT_MRF, prewarm

NO_SPLIT = "none"


def probability_name(k: int, source: str, foreground: bool = False) -> str:
    """``"Class 2 probability [mri]"``, or ``"Foreground probability [mri]"`` for a model."""
    return output_name("Foreground probability" if foreground else f"Class {k} probability",
                       source)


class SegmentationWidget(XaimedWidget):
    """Pick an image and a method; the labels land as ``"Segmentation [<image>]"``."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image = layer_picker(napari_viewer, Image, "image")
        self.method = ComboBox(label="method", choices=list(METHODS), value="otsu")
        self.threshold_by = ComboBox(label="threshold by", choices=["value", "percentile"],
                                     value="value")
        self.value = FloatSpinBox(label="threshold", value=0.5, min=-1e6, max=1e6, step=0.05)
        self.percentile = FloatSpinBox(label="percentile", value=95.0, min=0.0, max=100.0)
        self.classes = SpinBox(label="Otsu classes", value=2, min=2, max=5,
                               tooltip="otsu: more than 2 keeps the brightest multi-Otsu class")
        self.n_classes = SpinBox(label="tissue classes", value=3, min=2, max=10)
        self.tissue_mask = layer_picker(napari_viewer, Labels, "mask", nullable=True)
        self.mrf = FloatSpinBox(label="MRF weight", value=0.1, min=0.0, max=10.0, step=0.05,
                                tooltip="Spatial smoothing of the classes; higher is smoother")
        self.iterations = SpinBox(label="iterations", value=5, min=1, max=100)
        self.reproducible = CheckBox(label="reproducible (1 thread)", value=True)
        self.smoothing = FloatSpinBox(label="smoothing (mm)", value=0.0, min=0.0, max=20.0,
                                      step=0.5)
        self.opening = FloatSpinBox(label="opening radius (mm)", value=0.0, min=0.0, max=50.0,
                                    step=0.5)
        self.fill_holes = CheckBox(label="fill holes", value=False)
        self.instances = CheckBox(label="label instances", value=True)
        self.min_size = FloatSpinBox(label="min size (mm³)", value=0.0, min=0.0, max=1e7,
                                     step=10.0)
        self.connectivity = ComboBox(label="connectivity", choices=[6, 18, 26], value=26)
        self.split = ComboBox(label="split touching", choices=[NO_SPLIT, "watershed"],
                              value=NO_SPLIT)
        self.min_distance = FloatSpinBox(label="min distance (mm)", value=5.0, min=0.1,
                                         max=500.0, step=0.5)
        self.model_source = ComboBox(label="model",
                                     choices=[BUNDLED_SEGMENTER, "file", "folder"],
                                     value=BUNDLED_SEGMENTER)
        self.model_file = FileEdit(label="model file", mode="r",
                                   tooltip="TorchScript, or a state dict with <name>.json "
                                           "beside it")
        self.model_folder = FileEdit(label="model folder", mode="d",
                                     tooltip="a MONAI bundle, or a trained nnU-Net v2 result "
                                             "folder (plans.json, dataset.json, fold_k/)")
        self.roi_size = SpinBox(label="window (voxels, 0 = auto)", value=0, min=0, max=1024)
        self.overlap = FloatSpinBox(label="window overlap", value=0.25, min=0.0, max=0.95,
                                    step=0.05)
        self.blend = ComboBox(label="blending", choices=["gaussian", "constant"],
                              value="gaussian")
        self.sw_batch_size = SpinBox(label="windows per pass (0 = auto)", value=0, min=0,
                                     max=256)
        self.output = ComboBox(label="output", choices=["softmax", "sigmoid"], value="softmax")
        self.model_threshold = FloatSpinBox(label="sigmoid threshold", value=0.5, min=0.0,
                                            max=1.0, step=0.05)
        self.largest = CheckBox(label="keep largest component", value=False)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.preview_button = PushButton(text="Preview slice")
        self._fields = {
            "value": self.value, "percentile": self.percentile, "classes": self.classes,
            "n_classes": self.n_classes, "mask": self.tissue_mask, "mrf": self.mrf,
            "iterations": self.iterations, "reproducible": self.reproducible,
            "smoothing_mm": self.smoothing, "opening_mm": self.opening,
            "fill_holes": self.fill_holes, "instances": self.instances,
            "min_size_mm3": self.min_size, "connectivity": self.connectivity,
            "split": self.split, "min_distance_mm": self.min_distance,
            "model": self.model_source, "roi_size": self.roi_size, "overlap": self.overlap,
            "blend": self.blend, "sw_batch_size": self.sw_batch_size, "output": self.output,
            "threshold": self.model_threshold, "largest_component": self.largest,
            "device": self.device,
        }
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
        self._probabilities: dict[str, list[str]] = {}  # source -> probability layers shown
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

    def _preview_lazy(self, layer: Any, z: int, spacing: tuple[float, float, float],
                      translate: tuple[float, float, float]) -> None:
        """A dask-backed layer: one plane read in a worker; Otsu's slab-by-slab histogram pass
        runs once per layer and class count (its threshold is kept for the next previews)."""
        method, params = self.method.value, self.params()
        data = layer.data
        # a dask array's name is a token of its graph: unlike id(), never reused by another
        key = (getattr(data, "name", id(data)), method, params.get("classes"),
               params.get("value"))
        known = self._lazy_thresholds.get(key)

        def steps():
            yield Progress(0, 1, f"{layer.name}: preview of slice {z}")
            return preview_slice_lazy(data, z, method, spacing, threshold=known, **params)

        def done(found: tuple[np.ndarray, float], seconds: float) -> None:
            mask, threshold = found
            self._lazy_thresholds = {key: threshold}  # one layer's at a time: a float each
            self._show_preview(layer, z, mask, spacing, translate)

        self.job.start(steps(), done, f"Previewing slice {z} of {layer.name}")

    def _show_preview(self, layer: Any, z: int, mask: np.ndarray,
                      spacing: tuple[float, float, float],
                      translate: tuple[float, float, float]) -> None:
        prov = provenance("segmentation preview", sources=[layer.name],
                          params={"method": self.method.value, "slice": z,
                                  **self._plain_params()})
        at = (translate[0] + z * spacing[0], *translate[1:])
        add_or_update(self.viewer, labels_layer(
            mask[np.newaxis], output_name("Segmentation preview", layer.name), spacing,
            translate=at, provenance=prov))

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

    def _run_lazy(self, layer: Any, data: Any, method: str, params: dict[str, Any],
                  shown: dict[str, Any], spacing: tuple[float, float, float],
                  translate: tuple[float, float, float], retry: Any = None) -> None:
        """A dask-backed layer (a Zarr, a NIfTI larger than memory): segment_steps segments it
        slab by slab (the model window band by window band) into Zarr stores in a scratch
        folder, shown lazily over them; what needs the whole volume is refused before the
        job starts."""
        try:
            check_dask_segmentation(method, params)
        except XaimedError as exc:
            report_error(XaimedError(f"{layer.name!r}: {exc}"))
            return
        folder = scratch_folder("xaimed-labels-")

        def steps():
            return (yield from segment_steps(data, method, spacing, out=folder / "labels.zarr",
                                             origin=translate, **params))

        def done(result: SegmentationResult, seconds: float) -> None:
            self._show_result(result, layer.name, spacing, translate, shown, seconds,
                              scratch=folder)

        self.job.start(steps(), done, f"Segmenting {layer.name} ({method}, slab by slab)",
                       scratch=folder, retry_trusted=retry)

    def _show_result(self, result: SegmentationResult, source: str,
                     spacing: tuple[float, float, float], translate: tuple[float, float, float],
                     params: dict[str, Any], seconds: float,
                     inputs: dict[str, Any] | None = None, scratch: Path | None = None) -> None:
        # facts apart, as the CLI keeps them: merged into params, the model's description
        # replaced the model parameter and the device found replaced "auto", so the
        # parameters no longer reran the segmentation
        prov = provenance("segmentation", sources=[source], seconds=seconds,
                          params={"method": result.method, **params}, facts=result.facts,
                          label_kind=result.kind, inputs=inputs)
        shown = add_or_update(self.viewer, labels_layer(
            result.labels, output_name("Segmentation", source), spacing, translate=translate,
            provenance=prov))
        keep_while_shown(self.viewer, shown, scratch)  # a lazy result reads its store there
        names = []
        if result.probabilities is not None:
            foreground = result.facts.get("probabilities") == "foreground"
            for k, probability in enumerate(result.probabilities, start=1):
                name = probability_name(k, source, foreground)
                kind = {"kind": "foreground probability"} if foreground else {
                    "kind": "class probability", "class": k}
                heat = add_or_update(self.viewer, heatmap_layer(
                    probability, name, spacing, signed=False, translate=translate,
                    provenance={**prov, **kind}, contrast_limits=(0.0, 1.0),
                    visible=foreground))
                keep_while_shown(self.viewer, heat, scratch)
                names.append(name)
        for stale in set(self._probabilities.get(source, [])) - set(names):
            if stale in self.viewer.layers and "xaimed" in self.viewer.layers[stale].metadata:
                self.viewer.layers.remove(stale)
        self._probabilities[source] = names
