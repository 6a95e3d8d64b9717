"""Panoptic evaluation dock widget: reference vs prediction Labels, tables, AUTC plot, errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit
from napari.layers import Labels
from qtpy.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress
from napari_xaimed._core.provenance import PendingInputs, provenance
from napari_xaimed.evaluation import DEFAULT_METRICS, MATCHINGS, autc, evaluate_steps
from napari_xaimed.evaluation.errors import class_layers
from napari_xaimed.evaluation.label_modes import LABEL_MODES, describe_label_mode
from napari_xaimed.io.grid import grid_difference
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import (
    add_or_update,
    error_layer,
    labels_layer,
    missed_layer,
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
from napari_xaimed.viewer.widgets._results import CurvePlot, ResultTable
from napari_xaimed.viewer.widgets.cohort import CohortPanel

INSTANCE_COLUMNS = ["class_name", "status", "reference_ids", "prediction_ids", "accepted",
                    "score", "dice", "iou", "hd95", "assd", "nsd", "cldice", "rvd",
                    "reference_voxels", "prediction_voxels", "reference_mm3", "prediction_mm3"]
MISSED, FALSE_POSITIVE = "missed (FN)", "false positive"


def instance_rows(c: Any, voxel_mm3: float) -> list[dict[str, Any]]:
    """Rows of the Instances table of one class result: its matched and rejected groups, then
    each missed reference instance and each false-positive prediction, every row with a
    ``center_zyx`` (voxel coordinates) to go to.

    Parameters
    ----------
    c : ClassResult
        One class of a :class:`~napari_xaimed.evaluation.PanopticResult`.
    voxel_mm3 : float
        Volume of one voxel, for the mm³ columns.

    Returns
    -------
    list of dict
    """
    rows = []
    for row in c.rows:
        entry = {k: getattr(row, k) for k in INSTANCE_COLUMNS
                 if k not in ("status", "prediction_mm3")}
        entry["status"] = "matched" if row.accepted else "rejected"
        entry["prediction_mm3"] = row.prediction_voxels * voxel_mm3
        entry["center_zyx"] = row.center_zyx
        entry.update({f"part {k}": v for k, v in row.parts.items()})
        rows.append(entry)
    for rid in c.missed_reference_ids:
        voxels = c.missed_voxels.get(rid, 0)
        rows.append({"class_name": c.name, "status": MISSED, "reference_ids": (rid,),
                     "prediction_ids": (), "accepted": False, "reference_voxels": voxels,
                     "prediction_voxels": 0, "reference_mm3": voxels * voxel_mm3,
                     "prediction_mm3": 0.0, "center_zyx": c.missed_centres.get(rid)})
    for pid in c.false_positive_ids:
        voxels = c.false_positive_voxels.get(pid, 0)
        rows.append({"class_name": c.name, "status": FALSE_POSITIVE, "reference_ids": (),
                     "prediction_ids": (pid,), "accepted": False, "reference_voxels": 0,
                     "prediction_voxels": voxels, "reference_mm3": 0.0,
                     "prediction_mm3": voxels * voxel_mm3,
                     "center_zyx": c.false_positive_centres.get(pid)})
    return rows


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


class EvaluationWidget(XaimedWidget):
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
        self.classes = LineEdit(label="classes (JSON)", value="")
        self.parts = LineEdit(label="parts (JSON)", value="")
        self.voronoi = CheckBox(text="Voronoi regions", value=False)
        self.tolerance = FloatSpinBox(label="NSD tolerance (mm)", value=1.0, min=0.0, max=50.0)
        self.cldice = CheckBox(
            text="clDice (tubular structures)", value=False,
            tooltip="Centreline Dice from skeletons: for vessels, airways, neurons; meaningless "
            "on blob-like lesions (NaN, 0 or 1) and the slowest metric, so off by default")
        self.form.extend([self.reference, self.prediction, self.instance_input, self.connectivity,
                          self.label_mode, self.matching,
                          self.assignment, self.metric, self.threshold, self.classes, self.parts,
                          self.voronoi, self.tolerance, self.cldice])
        for picker in (self.reference, self.prediction):
            picker.changed.connect(self.update_info)
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
        self._layout.addWidget(self.job)
        self._layout.addWidget(self.tabs)
        self._geometry: tuple = ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        self.reset_choices()
        labels = [layer for layer in napari_viewer.layers if isinstance(layer, Labels)]
        if len(labels) >= 2:
            self.prediction.value = labels[1]
        self._show_fields()

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
            "classes": parse_json(self.classes.value, "classes"),
            "parts": parse_json(self.parts.value, "parts"),
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
            self._missed = {}
            # each label value its own class: one error map and one missed layer for all (a
            # voxel has one value, so the classes do not overlap); other classes one each
            together = result.params.get("label_mode") == "per_label"
            groups = ([(None, list(result.classes.values()))] if together else
                      [(name, [c]) for name, c in result.classes.items()])
            for name, members in groups:
                suffix = "" if name is None or len(result.classes) == 1 else f" {name}"
                errors, missed, entries = class_layers(members)
                add_or_update(self.viewer, error_layer(
                    errors, output_name(f"Errors{suffix}", pred_layer.name), spacing,
                    translate=translate,
                    provenance={**prov, "output": "error_map", "class": name}))
                layer = add_or_update(self.viewer, missed_layer(
                    missed, entries, output_name(f"Missed{suffix}", pred_layer.name), spacing,
                    translate=translate,
                    provenance={**prov, "output": "missed_map", "class": name}))
                layer.contour = 1
                layer.show_selected_label = False
                self._missed.update({entry: (layer, k)
                                     for k, entry in enumerate(entries, start=1)})
            for name, c in result.classes.items():
                suffix = "" if len(result.classes) == 1 else f" {name}"
                if c.region_map is not None:
                    add_or_update(self.viewer, labels_layer(
                        c.region_map, output_name(f"Voronoi regions{suffix}", ref_layer.name),
                        spacing, translate=translate, visible=False,
                        provenance={**prov, "output": "region_map", "class": name}))

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

    def show(self, result: Any, curves: Any) -> None:
        """Fill the tables and the plot from a result."""
        # a metric that was not asked for (clDice by default) gets no column of NaNs
        unasked = {"cldice"} - set(result.params.get("metrics", DEFAULT_METRICS))
        self.summary.set_rows(result.summary_rows())
        self.mode_line.setText(describe_label_mode(result.params))
        spacing = result.params.get("spacing") or self._geometry[0]
        voxel_mm3 = float(np.prod(spacing))
        rows = [entry for c in result.classes.values() for entry in instance_rows(c, voxel_mm3)]
        parts = sorted({k for r in rows for k in r if k.startswith("part ")})
        self.instances.set_rows(rows, [*(c for c in INSTANCE_COLUMNS if c not in unasked),
                                       *parts])
        self.regions.set_rows([{"class": n, **r} for n, c in result.classes.items()
                               for r in c.regions])
        if curves is not None:
            lines, areas = {}, []
            for name, per_metric in curves.curves.items():
                for metric, values in per_metric.items():
                    lines[f"{metric.upper()} {name}"] = values
                areas.append(f"{name}: AUTC PQ {curves.area[name]['pq']:.3f}")
            self.plot.plot(curves.thresholds, lines, "; ".join(areas))

    def go_to(self, row: dict[str, Any]) -> None:
        """Centre the viewer on an instance (the centroid of its reference instances, or of a
        false-positive prediction, in world coordinates); a missed reference is also shown
        alone in its missed layer (the other rows show them all again)."""
        self._show_missed(row)
        center = row.get("center_zyx")
        if center is None or any(np.isnan(center)):
            return
        spacing, translate = self._geometry
        world = [c * s + t for c, s, t in zip(center, spacing, translate, strict=True)]
        lead = self.viewer.dims.ndim - 3
        point = list(self.viewer.dims.point)
        point[lead:] = world
        self.viewer.dims.point = tuple(point)
        self.viewer.scene.camera.center = tuple(world)

    def _show_missed(self, row: dict[str, Any]) -> None:
        """Select a missed row's reference in its missed layer and show it alone there."""
        found = None
        if row.get("status") == MISSED and row.get("reference_ids"):
            found = self._missed.get((row.get("class_name"), int(row["reference_ids"][0])))
        for layer in {id(lay): lay for lay, _ in self._missed.values()}.values():
            if layer not in self.viewer.layers:
                continue
            if found is not None and found[0] is layer:
                layer.visible = True
                layer.selected_label = found[1]
                layer.show_selected_label = True
            else:
                layer.show_selected_label = False
