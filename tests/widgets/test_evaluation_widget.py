"""The evaluation widget: tables, plot, error layer over the reference, row selection."""

import csv

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_xaimed.evaluation import evaluate
from napari_xaimed.samples import panoptic_pair
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "panoptic")
    for name in ("reference", "prediction"):
        viewer.layers[name].scale = (2.0, 1.0, 1.0)
    w = EvaluationWidget(viewer)
    qtbot.addWidget(w)
    w.reference.value = viewer.layers["reference"]
    w.prediction.value = viewer.layers["prediction"]
    return w


def run(qtbot, w):
    with qtbot.waitSignal(w.job.finished, timeout=60000) as blocker:
        w.job.run_button.click()
    return blocker.args[0]


def test_evaluates_and_shows_results(qtbot, widget, tmp_path):
    viewer = widget.viewer
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    widget.threshold.value = 0.3
    widget.voronoi.value = True
    assert run(qtbot, widget) == "done"
    ref, pred = viewer.layers["reference"].data, viewer.layers["prediction"].data
    expected = evaluate(ref, pred, instance_input=True, matching="many_to_one", threshold=0.3,
                        spacing=(2.0, 1.0, 1.0), metrics=())["all"]
    (summary,) = widget.summary.rows
    assert (summary["tp"], summary["fp"], summary["fn"]) == (expected.tp, expected.fp, expected.fn)
    assert summary["pq"] == pytest.approx(expected.pq)
    assert len(widget.instances.rows) == (len(expected.rows) + expected.fn + expected.fp)
    # the missed references and false positives are rows too, with their sizes and centres
    events = panoptic_pair(seed=0).events
    missed = [r for r in widget.instances.rows if r["status"] == "missed (FN)"]
    false_pos = [r for r in widget.instances.rows if r["status"] == "false positive"]
    assert [r["reference_ids"] for r in missed] == [(i,) for i in expected.missed_reference_ids]
    assert [r["prediction_ids"] for r in false_pos] == [(i,) for i in expected.false_positive_ids]
    assert (len(missed), len(false_pos)) == (expected.fn, expected.fp)
    assert {(i,) for i in events["miss"]} <= {r["reference_ids"] for r in missed}
    assert {(i,) for i in events["false_positive"]} <= {r["prediction_ids"] for r in false_pos}
    (fp_row,) = [r for r in false_pos if r["prediction_ids"] == (events["false_positive"][0],)]
    fp_mask = pred == events["false_positive"][0]
    assert fp_row["prediction_voxels"] == fp_mask.sum()
    assert fp_row["prediction_mm3"] == pytest.approx(2.0 * fp_mask.sum())
    np.testing.assert_allclose(fp_row["center_zyx"], ndi.center_of_mass(fp_mask))
    assert {r["status"] for r in widget.instances.rows} <= {
        "matched", "rejected", "missed (FN)", "false positive"}
    assert len(widget.regions.rows) == expected.n_reference
    errors = viewer.layers["Errors [prediction]"]
    np.testing.assert_allclose(errors.scale, (2.0, 1.0, 1.0))
    assert set(np.unique(errors.data)) <= {0, 1, 2, 3, 4}
    assert errors.metadata["xaimed"]["sources"] == ["reference", "prediction"]
    assert "Voronoi regions [reference]" in viewer.layers
    assert widget.plot.axes.lines  # the AUTC curves were drawn
    # CSV export and clipboard text carry the same table
    widget.summary.export_csv(str(tmp_path / "summary.csv"))
    with open(tmp_path / "summary.csv") as handle:
        assert next(csv.DictReader(handle))["tp"] == str(expected.tp)
    assert widget.summary.tsv().splitlines()[0].startswith("class\ttp\tfp\tfn")

    # selecting an instance row moves the viewer to it (world z = voxel z * 2 mm)
    row = widget.instances.rows[0]
    widget.instances.table.selectRow(0)
    # napari snaps to the nearest slice: within half a slice (1 mm) of the centroid
    assert viewer.dims.point[0] == pytest.approx(row["center_zyx"][0] * 2.0, abs=1.0)

    # selecting a missed or false-positive row moves the viewer to that instance
    for target in (missed[0], fp_row):
        index = widget.instances.rows.index(target)
        widget.instances.table.selectRow(index)
        world = np.asarray(target["center_zyx"]) * (2.0, 1.0, 1.0)
        assert viewer.dims.point[0] == pytest.approx(world[0], abs=1.0)
        np.testing.assert_allclose(viewer.scene.camera.center[-3:], world)

    # re-running replaces the outputs instead of adding copies
    n_layers = len(viewer.layers)
    assert run(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers


def test_cldice_is_a_checkbox_off_by_default(qtbot, widget):
    """clDice only when `clDice (tubular structures)` is ticked: no column of NaNs otherwise."""
    from napari_xaimed.evaluation import DEFAULT_METRICS

    assert widget.cldice.value is False
    assert widget.params()["metrics"] == list(DEFAULT_METRICS)
    widget.instance_input.value = True
    assert run(qtbot, widget) == "done"
    assert "cldice" not in widget.instances.columns and "hd95" in widget.instances.columns
    assert "mean_cldice" not in widget.summary.rows[0] and "mean_hd95" in widget.summary.rows[0]
    widget.cldice.value = True
    assert widget.params()["metrics"] == [*DEFAULT_METRICS, "cldice"]
    assert run(qtbot, widget) == "done"
    viewer = widget.viewer
    expected = evaluate(viewer.layers["reference"].data, viewer.layers["prediction"].data,
                        instance_input=True, spacing=(2.0, 1.0, 1.0), metrics=("cldice",))["all"]
    shown = [r for r in widget.instances.rows if r["status"] in ("matched", "rejected")]
    assert "cldice" in widget.instances.columns
    np.testing.assert_allclose([r["cldice"] for r in shown], [r.cldice for r in expected.rows])
    assert not np.isnan(widget.summary.rows[0]["mean_cldice"])


def test_bad_json_is_a_notification(qtbot, widget, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget.classes.value = "{lesion: [1]"
    n_layers = len(widget.viewer.layers)
    widget.job.run_button.click()
    assert shown and "JSON" in shown[0]
    assert len(widget.viewer.layers) == n_layers and not widget.job.running


def test_part_aware_run(qtbot, widget):
    viewer = widget.viewer
    widget.reference.value = viewer.layers["reference parts"]
    widget.prediction.value = viewer.layers["prediction parts"]
    widget.parts.value = '{"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}'
    assert run(qtbot, widget) == "done"
    (summary,) = widget.summary.rows
    assert 0 <= summary["sq_core"] <= 1 and "part_aware_pq" in summary
    assert any("part core" in r for r in widget.instances.rows)


def test_connectivity_reaches_the_evaluation(qtbot, widget):
    viewer = widget.viewer
    ref = np.zeros((6, 6, 6), np.uint8)
    ref[1, 1, 1] = ref[2, 2, 2] = 1  # two voxels touching only at a corner
    viewer.add_labels(ref, name="corner ref")
    viewer.add_labels(ref.copy(), name="corner pred")
    widget.reference.value = viewer.layers["corner ref"]
    widget.prediction.value = viewer.layers["corner pred"]
    widget.connectivity.value = 6
    assert run(qtbot, widget) == "done"
    assert widget.summary.rows[0]["tp"] == 2  # two components under 6-connectivity
    widget.connectivity.value = 26
    assert run(qtbot, widget) == "done"
    assert widget.summary.rows[0]["tp"] == 1


def test_lazy_layers_are_evaluated_slab_by_slab_as_in_memory(qtbot, widget, monkeypatch):
    """Dask-backed labels (a Zarr larger than memory): the same tables as in memory, no error
    layer; part-aware or Voronoi settings are refused with what to do."""
    import dask.array as da

    viewer = widget.viewer
    for name in ("reference", "prediction"):
        layer = viewer.layers[name]
        viewer.add_labels(da.from_array(np.asarray(layer.data), chunks=(8, -1, -1)),
                          name=f"lazy {name}", scale=layer.scale)
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    assert run(qtbot, widget) == "done"
    in_memory = list(widget.summary.rows)
    instances = [(r["status"], r["reference_ids"], r["prediction_ids"])
                 for r in widget.instances.rows]
    widget.reset_choices()
    widget.reference.value = viewer.layers["lazy reference"]
    widget.prediction.value = viewer.layers["lazy prediction"]
    count = len(viewer.layers)
    assert run(qtbot, widget) == "done", widget.job.status.text()
    (lazy,) = widget.summary.rows
    for key in ("tp", "fp", "fn", "pq", "sq", "rq"):
        assert lazy[key] == pytest.approx(in_memory[0][key])
    assert [(r["status"], r["reference_ids"], r["prediction_ids"])
            for r in widget.instances.rows] == instances
    assert len(viewer.layers) == count  # no error layer over a lazy map

    shown = []
    monkeypatch.setattr("napari_xaimed.viewer.widgets.evaluation.report_error",
                        lambda exc: shown.append(str(exc)))
    widget.voronoi.value = True
    widget.run()
    assert "read lazily" in shown[-1] and not widget.job.running


def test_missed_reference_under_a_matched_prediction_is_shown(qtbot, widget):
    """Issue 27 item 9: reference B (id 9) is missed, and lies under prediction P, which is
    matched to A: the error map paints P there, the missed layer shows B, and selecting B's
    row shows B alone in it and centres the view on it."""
    viewer = widget.viewer
    ref = np.zeros((12, 22, 24), np.int32)
    pred = np.zeros_like(ref)
    ref[2:10, 2:10, 2:10] = 4        # A
    ref[2:10, 12:14, 2:10] = 9       # B
    pred[2:10, 2:14, 2:10] = 3       # P over A and B (IoU with A 512/768)
    ref[2:6, 16:20, 12:16] = 12      # C, missed, uncovered
    viewer.add_labels(ref, name="merged ref", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(pred, name="merged pred", scale=(2.0, 1.0, 1.0))
    widget.reference.value = viewer.layers["merged ref"]
    widget.prediction.value = viewer.layers["merged pred"]
    widget.instance_input.value = True
    assert run(qtbot, widget) == "done"
    rows = widget.instances.rows
    (missed_b,) = [r for r in rows if r["status"] == "missed (FN)" and r["reference_ids"] == (9,)]
    errors, missed = viewer.layers["Errors [merged pred]"], viewer.layers["Missed [merged pred]"]
    assert np.all(errors.data[ref == 9] == 1)  # P's TP paints B's voxels
    assert missed.contour > 0 and missed.visible
    label_b = int(missed.data[2, 12, 2])
    assert label_b and np.all(missed.data[ref == 9] == label_b)
    assert np.all(missed.data[ref == 12] != 0) and np.all(missed.data[ref == 4] == 0)
    features = missed.features.set_index("index")
    assert features.loc[label_b, "reference_id"] == 9  # shown in the status bar on hover

    widget.instances.table.selectRow(rows.index(missed_b))
    assert missed.visible and missed.show_selected_label and missed.selected_label == label_b
    world = np.array([5.5 * 2.0, 12.5, 5.5])  # B's centre of mass in mm
    np.testing.assert_allclose(viewer.scene.camera.center[-3:], world)
    assert viewer.dims.point[0] == pytest.approx(world[0], abs=1.0)
    (tp_row,) = [r for r in rows if r["status"] == "matched"]
    widget.instances.table.selectRow(rows.index(tp_row))
    assert not missed.show_selected_label  # every missed reference shown again


def test_label_values_are_classes_unless_asked(qtbot, widget):
    """Issue 27 item 8: a semantic map with several values gets a class per value and the mean
    over them by default, Panoptica's matching across values on request, and says which ran."""
    viewer = widget.viewer
    ref = np.zeros((10, 14, 10), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    ref[2:8, 8:11, 2:8] = 2       # touches value 1
    pred = np.zeros_like(ref)
    pred[2:8, 2:8, 2:8] = 1       # value 2 missed
    viewer.add_labels(ref, name="two ref")
    viewer.add_labels(pred, name="two pred")
    widget.reference.value = viewer.layers["two ref"]
    widget.prediction.value = viewer.layers["two pred"]
    assert not widget.label_mode.native.isHidden() and widget.label_mode.value == "per_label"
    assert run(qtbot, widget) == "done"
    assert [r["class"] for r in widget.summary.rows] == ["1", "2", "mean over classes"]
    assert [r["fn"] for r in widget.summary.rows] == [0, 1, 1]
    assert widget.summary.rows[-1]["pq"] == pytest.approx(0.5)
    assert "per_label" in widget.mode_line.text()
    assert "Errors [two pred]" in viewer.layers and "Errors 1 [two pred]" not in viewer.layers
    (missed_row,) = [r for r in widget.instances.rows if r["status"] == "missed (FN)"]
    assert missed_row["class_name"] == "2"
    missed = viewer.layers["Missed [two pred]"]
    assert np.all(missed.data[ref == 2] != 0) and np.all(missed.data[ref == 1] == 0)
    # both layers, one for all classes, are computed again from their provenance
    from types import SimpleNamespace

    from napari_xaimed.cli.rerun import _evaluation

    inputs = {"reference": SimpleNamespace(data=ref, spacing=(1.0, 1.0, 1.0)),
              "prediction": SimpleNamespace(data=pred, spacing=(1.0, 1.0, 1.0))}
    for layer in (viewer.layers["Errors [two pred]"], missed):
        np.testing.assert_array_equal(layer.data, _evaluation(layer.metadata["xaimed"], inputs))

    widget.label_mode.value = "panoptica"
    assert run(qtbot, widget) == "done"
    (summary,) = widget.summary.rows
    # the two values' components are two references; one matched, value 2's missed
    assert (summary["class"], summary["tp"], summary["fn"]) == ("all", 1, 1)
    assert "panoptica" in widget.mode_line.text()
    assert widget.summary.rows and viewer.layers["Errors [two pred]"].metadata["xaimed"][
        "params"]["label_mode"] == "panoptica"
    widget.instance_input.value = True
    assert widget.label_mode.native.isHidden() and widget.params()["label_mode"] is None


def test_go_to_lands_on_the_instance_in_an_oblique_world(make_napari_viewer, qtbot):
    """Reference and prediction on a grid turned 30 degrees (a file's direction cosines as the
    layers' affine): the camera centre lands on the instance's world position, computed here
    by hand as rotation @ (voxel * spacing + origin)."""
    viewer = make_napari_viewer()
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[2:5, 10:14, 3:7] = 1  # centroid (3, 11.5, 4.5)
    angle = np.deg2rad(30.0)
    rotation = np.array([[1.0, 0.0, 0.0],
                         [0.0, np.cos(angle), -np.sin(angle)],
                         [0.0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation
    spacing, origin = np.array([2.0, 1.0, 0.5]), np.array([5.0, -3.0, 7.0])
    for name in ("reference", "prediction"):
        viewer.add_labels(labels, name=name, scale=spacing, translate=origin, affine=affine)
    w = EvaluationWidget(viewer)
    qtbot.addWidget(w)
    w.reference.value = viewer.layers["reference"]
    w.prediction.value = viewer.layers["prediction"]
    assert run(qtbot, w) == "done"
    (row,) = w.instances.rows
    np.testing.assert_allclose(row["center_zyx"], (3.0, 11.5, 4.5))
    w.instances.table.selectRow(0)
    world = rotation @ (np.array([3.0, 11.5, 4.5]) * spacing + origin)
    np.testing.assert_allclose(viewer.scene.camera.center[-3:], world, atol=1e-6)
