"""The evaluation dock's forms and legends (issue 29 items 5 and 7) and Panoptica's spine pair
evaluated from the widget (its acceptance), against hand-written tables and Panoptica."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from _spine import spine_labels, write_spine
from panoptica import (
    ConnectedComponentsInstanceApproximator,
    InputType,
    Metric,
    NaiveThresholdMatching,
    Panoptica_Evaluator,
)
from panoptica.utils.constants import CCABackend
from panoptica.utils.speed_toggles import PanopticaSpeedToggles

from napari_xaimed import XaimedError
from napari_xaimed.io import read_volume
from napari_xaimed.samples import panoptic_pair
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget


def run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def hex_of(rgba) -> str:
    r, g, b = (int(round(255 * float(c))) for c in rgba[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def type_rows(editor, rows):
    """Fill the table as a user does: add rows, type into the cells."""
    from qtpy.QtWidgets import QTableWidgetItem

    for texts in rows:
        i = editor.table.rowCount()
        editor.table.insertRow(i)
        for j, text in enumerate(texts):
            editor.table.setItem(i, j, QTableWidgetItem(text))


@pytest.fixture
def panoptic(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    return widget


def test_classes_and_parts_are_tables(panoptic, monkeypatch):
    widget = panoptic
    widget.reference.value = widget.viewer.layers["reference"]
    assert widget.classes.value is None and widget.parts.value is None
    type_rows(widget.classes, [["lesion", "1, 2"], ["cyst", "3-5"]])
    type_rows(widget.parts, [["tumour", "1 2", "core: 2; edema: 3, 4"]])
    params = widget.params()
    assert params["classes"] == {"lesion": [1, 2], "cyst": [3, 4, 5]}
    assert params["parts"] == {"tumour": {"thing": [1, 2],
                                          "parts": {"core": [2], "edema": [3, 4]}}}
    # a dict or its JSON (scripts, the cohort) fills the rows the same way
    widget.parts.value = json.dumps(params["parts"])
    assert widget.parts.rows() == [["tumour", "1, 2", "core: 2; edema: 3, 4"]]
    type_rows(widget.classes, [["bad", "one"]])
    with pytest.raises(XaimedError, match="'one' is not a label value"):
        widget.params()
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    n_layers = len(widget.viewer.layers)
    widget.job.run_button.click()
    assert shown and "not a label value" in shown[0]
    assert len(widget.viewer.layers) == n_layers


def test_tables_prefilled_from_the_layer_and_cleared_with_it(qtbot, panoptic):
    widget = panoptic
    viewer = widget.viewer
    # the part layers' provenance records the sample's things and parts
    widget.reference.value = viewer.layers["reference parts"]
    widget.prediction.value = viewer.layers["prediction parts"]
    assert widget.parts.value == panoptic_pair(seed=0).parts == {
        "lesion": {"thing": [1, 2], "parts": {"core": [2]}}}
    # instance ids are no parts: the prefilled table goes
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    assert widget.parts.value is None
    assert run(qtbot, widget) == "done"
    assert widget.summary.rows and widget.instances.rows and widget.job.status.text()
    # the error map's legend: each value's colour as the layer draws it, and its meaning
    errors = viewer.layers["Errors [prediction]"]
    meaning = {1: "TP", 2: "FP", 3: "FN", 4: "merged fragment"}
    assert widget.legend.entries[:4] == [(hex_of(errors.get_color(v)), f"{v}: {m}")
                                         for v, m in meaning.items()]
    assert hex_of(viewer.layers["Missed [prediction]"].get_color(1)) == \
        widget.legend.entries[4][0]
    # other inputs: the old tables, status and legend go
    widget.prediction.value = viewer.layers["prediction parts"]
    assert widget.summary.rows == [] and widget.instances.rows == []
    assert widget.job.status.text() == "" and widget.legend.entries == []
    # what the user typed stays
    type_rows(widget.classes, [["lesion", "1"]])
    widget.reference.value = viewer.layers["reference parts"]
    assert widget.classes.value == {"lesion": [1]}


def test_label_names_reach_the_layer_and_the_tables(qtbot, make_napari_viewer, tmp_path):
    """A sidecar names the values: the reader puts the names in the layer's features (napari's
    status bar), the classes table is prefilled with them, and without it the per-value table
    gets a label-name column."""
    labels = spine_labels()
    prediction = labels.copy()
    prediction[6:9, 3:7, 1:5] = 0
    names = {"1": "L1", "2": "L2", "3": "L3"}
    for stem, data in (("ref", labels), ("pred", prediction)):
        write_spine(tmp_path / f"{stem}.nii.gz", data)
        (tmp_path / f"{stem}.labels.json").write_text(json.dumps(names))
    viewer = make_napari_viewer()
    for stem in ("ref", "pred"):
        viewer.open(str(tmp_path / f"{stem}.nii.gz"), plugin="napari-xaimed")
    ref = viewer.layers["ref"]
    assert list(ref.features["name"]) == ["background", "L1", "L2", "L3"]
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value, widget.prediction.value = ref, viewer.layers["pred"]
    assert widget.classes.value == {"L1": [1], "L2": [2], "L3": [3]}
    assert run(qtbot, widget) == "done"
    assert [r["class"] for r in widget.summary.rows] == ["L1", "L2", "L3"]
    widget.classes.set_rows([])  # the default: each value its own class, named by value
    assert run(qtbot, widget) == "done"
    rows = {r["class"]: r for r in widget.summary.rows}
    assert {c: rows[c]["label name"] for c in ("1", "2", "3")} == \
        {"1": "L1", "2": "L2", "3": "L3"}
    assert widget.instances.columns[:2] == ["class_name", "label name"]
    assert {(r["class_name"], r["label name"]) for r in widget.instances.rows} == \
        {("1", "L1"), ("2", "L2"), ("3", "L3")}


def panoptica_semantic(ref, pred, spacing):
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC,
        instance_approximator=ConnectedComponentsInstanceApproximator(CCABackend.cc3d),
        instance_matcher=NaiveThresholdMatching(matching_metric=Metric.IOU,
                                                matching_threshold=0.5),
        instance_metrics=[Metric.DSC, Metric.IOU],
        decision_metric=Metric.IOU, decision_threshold=0.5,
        speed_toggles=PanopticaSpeedToggles(crop_at_start=False))
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluator.evaluate(pred, ref, voxelspacing=spacing)["ungrouped"]


def test_spine_pair_evaluates_from_the_widget_as_panoptica(qtbot, make_napari_viewer, tmp_path):
    """Issue 29's acceptance: Panoptica's spine pair (its geometry: 0.586 x 0.586 x 3.3 mm,
    oblique axes, the prediction 0.00064 mm off after a round trip) opened from files and
    evaluated from the widget in Panoptica's mode equals Panoptica on the same voxels."""
    labels = spine_labels()
    prediction = labels.copy()
    prediction[6:9, 3:7, 1:5] = 0  # part of vertebra 1 missed
    prediction[6:18, 9:12, 1:5] = 0  # 3 of vertebra 2's 4 columns gone: below the threshold
    prediction[20:23, 17:19, 1:3] = 3  # a false positive
    paths = {"ref": write_spine(tmp_path / "ref.nii.gz", labels),
             "pred": write_spine(tmp_path / "pred.nii.gz", prediction, -0.00064, -0.00064)}
    viewer = make_napari_viewer()
    for path in paths.values():
        viewer.open(str(path), plugin="napari-xaimed")
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value = viewer.layers["ref"]
    widget.prediction.value = viewer.layers["pred"]
    widget.label_mode.value = "panoptica"
    assert run(qtbot, widget) == "done", widget.job.status.text()
    a, b = read_volume(paths["ref"]), read_volume(paths["pred"])
    theirs = panoptica_semantic(a.data, b.data, a.spacing)
    (row,) = widget.summary.rows
    assert (row["tp"], row["fp"], row["fn"]) == (theirs.tp, theirs.fp, theirs.fn) == (2, 2, 1)
    for metric in ("pq", "sq", "rq"):
        assert row[metric] == pytest.approx(getattr(theirs, metric), abs=1e-6)
    assert "Errors [pred]" in viewer.layers
