"""Attribution dock widget: explain a model's decision on an Image layer as heatmap layers.

Pick the image, the model (the bundled lesion classifier, or a file: TorchScript, a state dict
with its JSON config, a MONAI bundle folder), the target and one or more methods; each method
lands as its own ``"<Method> [<image>]"`` heatmap (signed maps diverging with symmetric limits,
unsigned ones sequential), with provenance including the model's SHA-256.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, FileEdit, FloatSpinBox, Label, Select, SpinBox
from napari.layers import Image, Labels

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.attribution import ATTENTION_METHODS, BUNDLED, METHODS, attribute_steps
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.heatmaps import show_heatmaps, watch
from napari_xaimed.viewer.layers import heatmap_layer, output_name, source_geometry
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._scratch import keep_while_shown, scratch_folder
from napari_xaimed.viewer.widgets._trust import TrustedModels
from napari_xaimed.viewer.widgets.attribution_form import (
    FIELD_PARAMS,
    PREDICTED,
    ModelFacts,
    model_facts,
    target_choices,
    values_text,
)

__all__ = ["PREDICTED", "AttributionWidget", "explained", "title"]
MEAN_HEAD = "mean of heads"


def title(method: str) -> str:
    """``"integrated_gradients"`` -> ``"Integrated Gradients"`` (layer names)."""
    special = {"gradcam": "Grad-CAM", "guided_gradcam": "Guided Grad-CAM", "lrp": "LRP",
               "smoothgrad": "SmoothGrad", "smoothgrad_sq": "SmoothGrad squared",
               "vargrad": "VarGrad", "deeplift": "DeepLift", "gradient_shap": "GradientSHAP",
               "attention_gradcam": "Attention Grad-CAM", "gradcam_pp": "Grad-CAM++",
               "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM", "layercam": "LayerCAM",
               "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM", "eigencam": "Eigen-CAM"}
    return special.get(method, method.replace("_", " ").title().replace(" X ", " x "))


def _class_name(index: int, classes: list[str]) -> str:
    return f"{index} ({classes[index]})" if 0 <= index < len(classes) else str(index)


def explained(result: Any) -> str:
    """What an attribution map is evidence for, in words: the explained class with the model's
    score and probability (softmax of the scores) and the predicted class (classifier), or the
    output channel and the region whose summed logit is explained (segmentation model).

    Parameters
    ----------
    result : Attribution
        A result of :func:`~napari_xaimed.attribution.attribute`.

    Returns
    -------
    str
        E.g. ``"explained class 1 (lesion), score 2.1, probability 0.97; predicted 1 (lesion)"``.
    """
    classes = list((result.model or {}).get("classes") or [])
    params = result.params or {}
    scores = np.asarray(result.scores, float)
    if "channel" in params:  # a segmentation model: a channel's summed logit in a region
        where = {"model prediction": "where the model predicts it",
                 "given mask": "inside the given region"}.get(params.get("region"), "in the region")
        text = f"explained channel {_class_name(int(params['channel']), classes)} {where}"
        if scores.size:
            text += f", summed logit {scores[0]:.4g}"
        return text
    if result.target is None:  # attention of a transformer backbone: no score to explain
        return f"attention of the query tokens ({params.get('query', 'all tokens')})"
    target = int(result.target)
    text = f"explained class {_class_name(target, classes)}"
    if scores.size > target:
        if scores.size == 1:  # one logit: a sigmoid's probability
            probability = 1.0 / (1.0 + np.exp(-scores[0]))
        else:  # class scores: their softmax
            shifted = np.exp(scores - scores.max())
            probability = shifted[target] / shifted.sum()
        text += f", score {scores[target]:.4g}, probability {probability:.2f}"
    if scores.size:
        text += f"; predicted {_class_name(int(scores.argmax()), classes)}"
    return text


class AttributionWidget(XaimedWidget):
    """Image, model, target, methods and their few parameters; one heatmap layer per method."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.image = layer_picker(napari_viewer, Image, "image")
        self.model_source = ComboBox(label="model", choices=[BUNDLED, "file"], value=BUNDLED)
        self.model_file = FileEdit(label="model file", mode="r",
                                   tooltip="TorchScript, or a state dict with <name>.json "
                                           "beside it, or a MONAI bundle folder")
        self.facts: ModelFacts | None = None  # classes, attention, input grid once known
        # choices that follow self.facts (the form's reset_choices calls them again)
        self.target = ComboBox(label="target", value=PREDICTED,
                               choices=lambda _: target_choices(
                                   None if self.facts is None else self.facts.classes),
                               tooltip="Class to explain; for segmentation models the output "
                                       "channel, summed inside the region")
        self.region = layer_picker(napari_viewer, Labels, "region (segmentation)", nullable=True)
        self.methods = Select(label="methods", choices=lambda _: self._method_names(),
                              value=["integrated_gradients", "gradcam"])
        self.steps = SpinBox(label="IG steps", value=32, min=2, max=512)
        self.samples = SpinBox(label="noise samples", value=16, min=1, max=256)
        self.noise = FloatSpinBox(label="noise (of range)", value=0.1, min=0.0, max=1.0,
                                  step=0.05)
        self.window = SpinBox(label="occlusion window (model voxels)", value=8, min=1,
                              max=128, tooltip="In voxels of the model's input grid, which "
                                               "the image is resized to (32^3 for the "
                                               "bundled model)")
        self.stride = SpinBox(label="occlusion stride (model voxels)", value=8, min=1, max=128)
        self.block = SpinBox(label="attention block", value=-1, min=-64, max=63,
                             tooltip="Transformers: the block shown (raw attention) or the last "
                                     "block chained (rollout); -1 is the last")
        self.head = ComboBox(label="attention head", choices=[MEAN_HEAD, *map(str, range(32))],
                             value=MEAN_HEAD)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.form.extend([self.image, self.model_source, self.model_file, self.target,
                          self.region, self.methods, self.steps, self.samples, self.noise,
                          self.window, self.stride, self.block, self.head, self.device])
        self.image.changed.connect(self.update_info)
        self.model_source.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._model_changed)
        self.methods.changed.connect(self._show_fields)
        for field in (self.image, self.model_source, self.model_file, self.target, self.region,
                      self.methods):
            field.changed.connect(self._clear_status)
        self.job = JobPanel("Explain")
        self._layout.addWidget(self.job)
        # what the last run's heatmaps are evidence for (the info line describes the image)
        self.explained = Label(value="")
        self.explained.native.setWordWrap(True)
        self._layout.addWidget(self.explained.native)
        self.job.run_button.clicked.connect(self.run)
        self.trusted = TrustedModels()
        self._model_changed()
        watch(napari_viewer)  # every heatmap here gets its colour bar and title
        self.reset_choices()

    def _model_changed(self, *_: Any) -> None:
        """What is known of the chosen model: the bundled one is read at once (a few ms), a
        file once a run has loaded it."""
        bundled = self.model_source.value == BUNDLED
        self.facts = model_facts(self._model(BUNDLED)) if bundled else None
        self._learned()

    def _method_names(self) -> list[str]:
        """Every method, less the attention ones for a model known to have no attention."""
        facts = self.facts
        return [m for m in METHODS if facts is None or facts.attention
                or m not in ATTENTION_METHODS]

    def _learned(self) -> None:
        """Offer the targets and methods that apply to the model as far as it is known."""
        self.target.reset_choices()  # a value no longer offered falls back to the first
        self.methods.reset_choices()
        self._show_fields()
        self.update_info()

    def _show_fields(self, *_: Any) -> None:
        """Only the fields of the chosen methods (attention block and head: transformers)."""
        self.model_file.visible = self.model_source.value == "file"
        takes = {p for m in self.methods.value for p in METHODS[m].params}
        for name, param in FIELD_PARAMS.items():
            getattr(self, name).visible = param in takes

    def _clear_status(self, *_: Any) -> None:
        """A changed input makes the last run's lines stale."""
        if not self.job.running:
            self.explained.value = ""
            self.job.status.setText("")

    def update_info(self, *_: Any) -> None:
        text = describe_layer(self.image.value)
        facts = getattr(self, "facts", None)
        if facts is not None and facts.input_size and self.image.value is not None:
            shape = self.image.value.data.shape[-3:]
            ratio = " x ".join(f"{n / m:.3g}" for n, m in zip(shape, facts.input_size,
                                                               strict=True))
            text += (f"\nthe model sees {' x '.join(map(str, facts.input_size))} voxels: one "
                     f"model voxel is {ratio} image voxels")
        self.info.value = text

    def method_params(self, method: str) -> dict[str, Any]:
        """The form's values for the parameters ``method`` takes."""
        values = {"steps": self.steps.value, "samples": self.samples.value,
                  "noise": self.noise.value, "window": self.window.value,
                  "stride": self.stride.value, "block": self.block.value,
                  "head": None if self.head.value == MEAN_HEAD else int(self.head.value)}
        return {k: v for k, v in values.items() if k in METHODS[method].params}

    def run(self) -> None:
        """Run each chosen method in one worker; every result becomes its own layer."""
        layer = self.image.value
        try:
            if layer is None:
                raise XaimedError("Add or open an Image layer first.")
            methods = list(self.methods.value)
            if not methods:
                raise XaimedError("Pick at least one method.")
            source = self.chosen_model(BUNDLED)
            check_same_grid(layer, self.region.value)
        except XaimedError as exc:
            report_error(exc)
            return
        lazy = is_lazy(layer.data)
        data = layer.data if lazy else np.asarray(layer.data)
        # attribute_steps takes a lazy layer slab by slab itself (a segmentation network's
        # region by sliding windows; a region for a classifier refused, as in memory)
        explain = attribute_steps
        target = None if self.target.value == PREDICTED else int(self.target.value)
        # as it is: a lazy region is read slab by slab, or in the worker by attribute
        region = None if self.region.value is None else self.region.value.data
        device = self.device.value
        params = {m: self.method_params(m) for m in methods}
        spacing, translate = source_geometry(layer)
        # the layer's voxel size, so the model's field-of-view check runs (models/domain.py)
        sized = {} if lazy else {"spacing": spacing}
        name = layer.name
        # the image and the region (a segmentation model's target) as files or samples with
        # their SHA-256: what a rerun reads again
        # (PendingInputs does not hash a lazy layer: that would read the whole volume)
        inputs = PendingInputs(image=layer, region=self.region.value)
        # a lazy map is written slab by slab into a store there, read by its dask layer
        folder = scratch_folder("xaimed-attribution-") if lazy else None
        where = {} if folder is None else {"workdir": folder}
        trust = self.trusted.trusts(source)

        def steps():
            yield Progress(0, 100 * len(methods), "loading the model")
            inputs.complete()  # SHA-256 of the layers, off the GUI thread
            # in the worker: a big file must not freeze napari
            model = self._model(source, trust)
            results = []
            for i, method in enumerate(methods):
                inner = explain(model, data, method, target=target, region=region,
                                device=device, **sized, **where, **params[method])
                try:
                    while True:
                        try:
                            step = next(inner)
                        except StopIteration as stop:
                            results.append(stop.value)
                            break
                        yield Progress(i * 100 + int(100 * step.done / max(step.total, 1)),
                                       100 * len(methods),
                                       f"{title(method)} ({i + 1} of {len(methods)}): "
                                       f"{step.message}")
                finally:
                    inner.close()  # a cancel runs the method's own cleanup now
            return results

        def done(results: list, seconds: float) -> None:
            if self.facts is None and self._models:  # a model file, loaded by this run
                self.facts = model_facts(next(iter(self._models.values())))
                self._learned()
            # what the heatmaps are evidence for, once per distinct target
            self.explained.value = f"{name}: " + " | ".join(
                dict.fromkeys(explained(r) for r in results))
            maps = []
            for result in results:
                prov = provenance(
                    "attribution", sources=[name], seconds=result.seconds,
                    device=result.device,
                    params={"method": result.method, **result.params,
                            "target_index": result.target},
                    model=result.model, scores=result.scores,
                    inputs=None if inputs is None else inputs.records)
                maps.append(heatmap_layer(
                    result.map, output_name(title(result.method), name), spacing,
                    signed=result.signed, translate=translate, provenance=prov,
                    values=values_text(result)))
            # one layer per method, side by side; only the last one shows
            for shown in show_heatmaps(self.viewer, maps):
                keep_while_shown(self.viewer, shown, folder)

        self.job.start(steps(), done, f"Explaining {name} ({', '.join(methods)})",
                       scratch=folder, retry_trusted=self.trusted.retry(self.run))
