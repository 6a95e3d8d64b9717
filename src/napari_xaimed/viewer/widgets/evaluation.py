"""Panoptic evaluation dock widget: reference vs prediction Labels, tables, AUTC plot, errors.

The form and the runs are here; the tables, plot and error layers are in
:mod:`._evaluation_results`.
"""

from __future__ import annotations

import json
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox
from napari.layers import Labels
from qtpy.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.evaluation import DEFAULT_METRICS, MATCHINGS, autc, evaluate_steps
from napari_xaimed.evaluation.label_modes import LABEL_MODES
from napari_xaimed.io.grid import grid_difference
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import source_geometry
from napari_xaimed.viewer.widgets._base import (
    XaimedWidget,
    check_same_grid,
    describe_layer,
    layer_picker,
)
from napari_xaimed.viewer.widgets._evaluation_results import (
    FALSE_POSITIVE,
    INSTANCE_COLUMNS,
    MISSED,
    EvaluationResults,
    instance_rows,
)
from napari_xaimed.viewer.widgets._job import JobPanel, report_error
from napari_xaimed.viewer.widgets._label_tables import ClassesEditor, PartsEditor
from napari_xaimed.viewer.widgets._legend import Legend
from napari_xaimed.viewer.widgets._results import CurvePlot, ResultTable
from napari_xaimed.viewer.widgets.cohort import CohortPanel

__all__ = ["FALSE_POSITIVE", "INSTANCE_COLUMNS", "MISSED", "EvaluationWidget", "grid_check",
           "instance_rows", "parse_json"]


def grid_check(reference: Any, prediction: Any) -> str:
    """Whether two layers share one voxel grid, as evaluation needs, and what to do if not."""
    if reference is None or prediction is None:
        return "Pick a reference and a prediction Labels layer."
    if reference is prediction:
        return "Reference and prediction are the same layer: pick two different ones."
    if reference.data.shape != prediction.data.shape:
        return (f"Shapes differ ({reference.data.shape} vs {prediction.data.shape}): resample the "
                "prediction onto the reference grid first.")
    problem = grid_difference(reference, prediction)
    if problem is not None:
        return problem
    return f"Same grid: {describe_layer(reference)}."


def parse_json(text: str, what: str) -> Any:
    """The classes/parts fields: empty means none, otherwise JSON."""
    text = text.strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise XaimedError(f"{what} is not valid JSON ({exc.msg}); e.g. "
                          + ('{"lesion": [1, 2]}' if what == "classes" else
                             '{"tumor": {"thing": [1, 2], "parts": {"core": [2]}}}')) from exc


class EvaluationWidget(EvaluationResults, XaimedWidget):
    """Pick reference and prediction, the matching and its threshold; see tables and layers."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.reference = layer_picker(napari_viewer, Labels, "reference")
        self.prediction = layer_picker(napari_viewer, Labels, "prediction")
        self.instance_input = CheckBox(text="labels are instance ids", value=False)
        self.connectivity = ComboBox(label="connectivity", choices=[6, 18, 26], value=26,
                                     tooltip="Of the connected components of semantic labels")
        self.label_mode = ComboBox(
            label="label values", choices=list(LABEL_MODES), value="per_label",
            tooltip="Semantic maps with several label values: per_label = each value its own "
            "class (and the mean over classes); panoptica = components of each value, matched "
            "across values as one class (as Panoptica); merged = all values one foreground. "
            "Classes (JSON) group values themselves.")
        self.matching = ComboBox(label="matching", choices=list(MATCHINGS), value="one_to_one")
        self.assignment = ComboBox(label="assignment", choices=["greedy", "optimal"])
        self.metric = ComboBox(label="match metric", choices=["iou", "dice"], value="iou")
        self.threshold = FloatSpinBox(label="threshold", value=0.5, min=0.0, max=1.0, step=0.05)
        self.classes = ClassesEditor("Classes (group label values)")
        self.parts = PartsEditor("Part-aware things")
        self.voronoi = CheckBox(text="Voronoi regions", value=False)
        self.tolerance = FloatSpinBox(label="NSD tolerance (mm)", value=1.0, min=0.0, max=50.0)
        self.cldice = CheckBox(
            text="clDice (tubular structures)", value=False,
            tooltip="Centreline Dice from skeletons: for vessels, airways, neurons; meaningless "
            "on blob-like lesions (NaN, 0 or 1) and the slowest metric, so off by default")
        self.form.extend([self.reference, self.prediction, self.instance_input, self.connectivity,
                          self.label_mode, self.matching,
                          self.assignment, self.metric, self.threshold,
                          self.voronoi, self.tolerance, self.cldice])
        self._layout.insertWidget(1, self.classes)
        self._layout.insertWidget(2, self.parts)
        for picker in (self.reference, self.prediction):
            picker.changed.connect(self.update_info)
            picker.changed.connect(self._inputs_changed)
        self.matching.changed.connect(self._show_fields)
        self.instance_input.changed.connect(self._show_fields)
        self.job = JobPanel("Evaluate")
        self.job.run_button.clicked.connect(self.run)
        self.summary = ResultTable("panoptic summary")
        self.instances = ResultTable("instances")
        self.regions = ResultTable("voronoi regions")
        self.plot = CurvePlot("matching threshold", "quality")
        self.instances.on_select(self.go_to)
        self.mode_line = QLabel("")
        self.mode_line.setWordWrap(True)
        summary_tab = QWidget()
        summary_layout = QVBoxLayout(summary_tab)
        summary_layout.setContentsMargins(0, 0, 0, 0)
        summary_layout.addWidget(self.mode_line)
        summary_layout.addWidget(self.summary)
        # (class, reference id) of each missed reference -> its layer and label there
        self._missed: dict[tuple[str, int], tuple[Any, int]] = {}
        self.tabs = QTabWidget()
        self.cohort = CohortPanel(self)
        for widget, title in ((summary_tab, "Summary"), (self.instances, "Instances"),
                              (self.plot, "AUTC"), (self.regions, "Regions"),
                              (self.cohort, "Cohort")):
            self.tabs.addTab(widget, title)
        self.legend = Legend("Error map:")
        self._layout.addWidget(self.job)
        self._layout.addWidget(self.legend)
        self._layout.addWidget(self.tabs)
        self._geometry: tuple = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        self.reset_choices()
        labels = [layer for layer in napari_viewer.layers if isinstance(layer, Labels)]
        if len(labels) >= 2:
            self.prediction.value = labels[1]
        self._show_fields()
        self._inputs_changed()

    def _show_fields(self, *_: Any) -> None:
        self.assignment.visible = self.matching.value == "one_to_one"
        self.connectivity.visible = not self.instance_input.value
        self.label_mode.visible = not self.instance_input.value

    def update_info(self, *_: Any) -> None:
        self.info.value = grid_check(self.reference.value, self.prediction.value)

    def params(self) -> dict[str, Any]:
        """Keyword arguments for :func:`~napari_xaimed.evaluation.evaluate` from the form."""
        return {
            "matching": self.matching.value,
            "assignment": (self.assignment.value if self.matching.value == "one_to_one"
                           else "greedy"),
            "match_metric": self.metric.value,
            "threshold": float(self.threshold.value),
            "instance_input": bool(self.instance_input.value),
            "connectivity": int(self.connectivity.value),
            "label_mode": None if self.instance_input.value else self.label_mode.value,
            "classes": self.classes.mapping(),
            "parts": self.parts.mapping(),
            "voronoi": bool(self.voronoi.value),
            "nsd_tolerance_mm": float(self.tolerance.value),
            "metrics": [*DEFAULT_METRICS, *(["cldice"] if self.cldice.value else [])],
        }

    def run(self) -> None:
        """Evaluate in a worker; fill the tables and add the error (and region) layers."""
        ref_layer, pred_layer = self.reference.value, self.prediction.value
        try:
            if ref_layer is None or pred_layer is None:
                raise XaimedError("Pick a reference and a prediction Labels layer.")
            if ref_layer is pred_layer:
                raise XaimedError("Reference and prediction are the same layer: pick two.")
            check_same_grid(ref_layer, pred_layer)
            params = self.params()
        except XaimedError as exc:
            report_error(exc)
            return
        spacing, translate = source_geometry(ref_layer)
        self._geometry = (spacing, translate)
        reference, prediction = ref_layer.data, pred_layer.data
        if is_lazy(reference) or is_lazy(prediction):
            self._run_lazy(ref_layer, pred_layer, params, spacing)
            return
        inputs = PendingInputs(reference=ref_layer, prediction=pred_layer)
        curve_args = {k: params[k] for k in ("matching", "assignment", "match_metric",
                                             "instance_input", "classes", "connectivity",
                                             "label_mode")}

        def steps():
            inputs.complete()  # SHA-256 of the layers, off the GUI thread
            result = yield from evaluate_steps(reference, prediction, spacing=spacing,
                                               keep_maps=True, **params)
            yield Progress(1, 1, "threshold curve (AUTC)")  # a chance to cancel before it
            curves = autc(reference, prediction, **curve_args) if params["parts"] is None else None
            return result, curves

        def done(outcome: tuple, seconds: float) -> None:
            result, curves = outcome
            self.show(result, curves)
            prov = provenance("panoptic evaluation", sources=[ref_layer.name, pred_layer.name],
                              params=params, seconds=seconds,
                              summary=[c.summary() for c in result.classes.values()],
                              inputs=inputs.records)
            self._add_layers(result, prov, ref_layer, pred_layer, spacing, translate)

        self.job.start(steps(), done, f"Evaluating {pred_layer.name}")

    def _run_lazy(self, ref_layer: Any, pred_layer: Any, params: dict[str, Any],
                  spacing: tuple[float, float, float]) -> None:
        """Lazy (Zarr, larger than memory) layers: the tables from one slab-by-slab pass
        (:func:`~napari_xaimed.evaluation.evaluate_steps` takes the dask maps slab by slab);
        no error layer or threshold curve, which need the whole maps."""

        if params["parts"] is not None or params["voronoi"]:
            report_error(XaimedError(
                f"{ref_layer.name!r} or {pred_layer.name!r} is read lazily (larger than "
                "memory): part-aware and Voronoi evaluation need the whole maps in memory. "
                "Clear parts and Voronoi, or load a crop (layer.data[z0:z1].compute())."))
            return
        lazy_params = {k: v for k, v in params.items() if k not in ("parts", "voronoi")}
        reference, prediction = ref_layer.data, pred_layer.data

        def steps():
            return (yield from evaluate_steps(reference, prediction, spacing=spacing,
                                              **lazy_params))

        def done(result: Any, seconds: float) -> None:
            self._missed = {}  # no missed layer for lazy layers: an older one is not this one's
            self.show(result, None)
            self.plot.plot([], {}, "no threshold curve for lazy layers")

        self.job.start(steps(), done,
                       f"Evaluating {pred_layer.name} against {ref_layer.name} (slab by slab)")

