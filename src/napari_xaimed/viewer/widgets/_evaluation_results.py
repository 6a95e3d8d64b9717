"""The evaluation dock's results: the instance rows, the tables and plot, the error layers
and going to an instance."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_xaimed.evaluation import DEFAULT_METRICS
from napari_xaimed.evaluation.errors import ERROR_CODES, class_layers
from napari_xaimed.evaluation.label_modes import describe_label_mode
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import (
    ERROR_COLOURS,
    MISSED_COLOUR,
    add_or_update,
    error_layer,
    labels_layer,
    missed_layer,
    output_name,
)
from napari_xaimed.viewer.widgets._base import region_names

LABEL_NAME = "label name"


def error_legend() -> list[tuple[str, str]]:
    """``(colour, meaning)`` of the error map's values, then the missed references' outline."""
    return [*((ERROR_COLOURS[code], f"{code}: {ERROR_CODES[code]}") for code in ERROR_CODES),
            (MISSED_COLOUR, "outline: missed reference (FN)")]


def layer_parts(layer: Any) -> dict[str, Any] | None:
    """The part-aware things a Labels layer's provenance records (the panoptic sample's), when
    its label values are among theirs (a semantic map of things and parts, not instance ids)."""
    prov = (getattr(layer, "metadata", None) or {}).get("xaimed") or {}
    parts = (prov.get("params") or {}).get("parts")
    if not isinstance(parts, dict) or not parts or is_lazy(layer.data):
        return None
    allowed = set()
    for spec in parts.values():
        for values in (spec.get("thing", []), *spec.get("parts", {}).values()):
            allowed.update(int(v) for v in np.atleast_1d(values))
    found = set(np.unique(np.asarray(layer.data)).tolist()) - {0}
    return parts if found and found <= allowed else None


def with_label_names(rows: list[dict[str, Any]], key: str, names: dict[int, str]
                     ) -> list[dict[str, Any]]:
    """Rows with a ``"label name"`` after ``key`` where that is a named label value."""
    out = []
    for row in rows:
        value = str(row.get(key, ""))
        named = {}
        for k, v in row.items():
            named[k] = v
            if k == key:
                named[LABEL_NAME] = names.get(int(value), "") if value.isdigit() else ""
        out.append(named)
    return out

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


class EvaluationResults:
    """The result views of :class:`~napari_xaimed.viewer.widgets.EvaluationWidget`."""

    viewer: Any
    job: Any
    legend: Any
    reference: Any
    prediction: Any
    classes: Any
    parts: Any
    cohort: Any
    summary: Any
    instances: Any
    regions: Any
    plot: Any
    mode_line: Any
    _geometry: tuple
    _missed: dict[tuple[str, int], tuple[Any, int]]

    def _label_names(self) -> dict[int, str]:
        """Names of the label values: the reference's, else the prediction's (features)."""
        return (region_names(self.reference.value) or region_names(self.prediction.value)
                or {})

    def _inputs_changed(self, *_: Any) -> None:
        """Other layers picked: the old results' tables, plot, status and legend go, and the
        class and part tables are prefilled from the reference (its label names, the parts
        its provenance records) unless the user typed in them."""
        inputs = (self.reference.value, self.prediction.value)
        if self.job.running or inputs == getattr(self, "_inputs", None):
            return
        self._inputs = inputs
        for table in (self.summary, self.instances, self.regions):
            table.set_rows([])
        self.plot.plot([], {}, "")
        self.mode_line.setText("")
        self.job.status.setText("")
        self.legend.clear()
        self._missed = {}
        names = region_names(inputs[0]) if inputs[0] is not None else None
        names = {v: n for v, n in (names or {}).items() if v != 0}
        if self.classes.prefilled or not self.classes.rows():
            if names:
                self.classes.fill_from_names(names)
            else:
                self.classes.set_rows([])
        parts = layer_parts(inputs[0]) if inputs[0] is not None else None
        if self.parts.prefilled or not self.parts.rows():
            self.parts.set_rows(self.parts.to_rows(parts) if parts else [], prefilled=True)

    def _add_layers(self, result: Any, prov: dict[str, Any], ref_layer: Any, pred_layer: Any,
                    spacing: tuple[float, float, float],
                    translate: tuple[float, float, float]) -> None:
        """The error and missed layers of each class (and the Voronoi regions, hidden)."""
        self.legend.set_entries(error_legend(), "Error map:")
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

    def show(self, result: Any, curves: Any) -> None:
        """Fill the tables and the plot from a result."""
        # a metric that was not asked for (clDice by default) gets no column of NaNs
        unasked = {"cldice"} - set(result.params.get("metrics", DEFAULT_METRICS))
        names = self._label_names()
        summary = result.summary_rows()
        self.summary.set_rows(with_label_names(summary, "class", names) if names else summary)
        self.mode_line.setText(describe_label_mode(result.params))
        spacing = result.params.get("spacing") or self._geometry[0]
        voxel_mm3 = float(np.prod(spacing))
        rows = [entry for c in result.classes.values() for entry in instance_rows(c, voxel_mm3)]
        parts = sorted({k for r in rows for k in r if k.startswith("part ")})
        columns = [c for c in INSTANCE_COLUMNS if c not in unasked]
        if names:
            rows = with_label_names(rows, "class_name", names)
            columns.insert(1, LABEL_NAME)
        self.instances.set_rows(rows, [*columns, *parts])
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
        false-positive prediction, in world coordinates, oblique grids included); a missed
        reference is also shown alone in its missed layer (the other rows show them all
        again)."""
        self._show_missed(row)
        center = row.get("center_zyx")
        if center is None or any(np.isnan(center)):
            return
        # the table belongs to the picked reference (other inputs clear it): its own transform
        # (scale, translate and a file's direction cosines) takes the voxel into the world
        layer = self.reference.value
        if layer is not None:
            world = [float(w) for w in layer.data_to_world(center)[-3:]]
        else:
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
