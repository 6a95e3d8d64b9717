"""One grid in the viewer: files of one scanner grid whose origins differ by float noise after a
round trip (Panoptica's spine pair: 0.00064 mm, 0.0011 of a voxel) are evaluated and checked;
half a voxel is still refused, with the numbers that differ (issue 27, item 7)."""


import numpy as np
import pytest
from _spine import spine_labels, write_spine

from napari_xaimed.attribution import relevance_by_region, truth_scores
from napari_xaimed.evaluation import evaluate
from napari_xaimed.io import read_volume
from napari_xaimed.viewer.widgets._base import check_same_grid
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget, grid_check
from napari_xaimed.viewer.widgets.explanations import ExplanationWidget


@pytest.fixture
def files(tmp_path):
    """Reference, a prediction 0.00064 mm off (one grid), one half a voxel off, a heatmap."""
    labels = spine_labels()  # NIfTI (i, j, k)
    prediction = labels.copy()
    prediction[6:9, 3:7, 1:5] = 0
    heat = np.random.default_rng(0).random(labels.shape).astype(np.float32) + (labels > 0)
    return {"ref": str(write_spine(tmp_path / "ref.nii.gz", labels)),
            "pred": str(write_spine(tmp_path / "pred.nii.gz", prediction, -0.00064, -0.00064)),
            "moved": str(write_spine(tmp_path / "moved.nii.gz", prediction, 0.58594 / 2)),
            "heat": str(write_spine(tmp_path / "heat.nii.gz", heat))}


@pytest.fixture
def viewer(make_napari_viewer, files):
    viewer = make_napari_viewer()
    for path in files.values():
        viewer.open(path, plugin="napari-xaimed")
    return viewer


def run(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_evaluation_widget_evaluates_a_round_trip_pair(qtbot, viewer, files):
    ref, pred = viewer.layers["ref"], viewer.layers["pred"]
    assert ref.translate[1] != pred.translate[1]  # the 0.00064 mm are there
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value, widget.prediction.value = ref, pred
    assert grid_check(ref, pred).startswith("Same grid")
    assert run(qtbot, widget) == "done"
    a, b = read_volume(files["ref"]), read_volume(files["pred"])
    expected = evaluate(a.data, b.data, spacing=a.spacing, **widget.params())
    rows = {r["class"]: r for r in widget.summary.rows}
    assert len(rows) == len(expected.summary_rows())  # a row per label value and their mean
    for name, scores in expected.classes.items():
        assert (rows[name]["tp"], rows[name]["fn"], rows[name]["fp"]) == \
            (scores.tp, scores.fn, scores.fp)
        assert rows[name]["pq"] == pytest.approx(scores.pq)


def test_half_a_voxel_is_refused_with_the_numbers(qtbot, viewer, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget = EvaluationWidget(viewer)
    qtbot.addWidget(widget)
    widget.reference.value = viewer.layers["ref"]
    widget.prediction.value = viewer.layers["moved"]
    widget.job.run_button.click()
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    (message,) = shown
    assert "'ref' and 'moved' do not overlay" in message
    # both origins (RAS y: 153.269 and 153.562) to the digits that differ, and how far
    assert "153.269" in message and "153.562" in message
    assert "0.293 mm apart (0.5 of a 0.58594 mm voxel" in message
    assert grid_check(viewer.layers["ref"], viewer.layers["moved"]) == message


def test_explanation_checks_accept_a_round_trip_pair(qtbot, viewer, files):
    heat, pred = viewer.layers["heat"], viewer.layers["pred"]
    widget = ExplanationWidget(viewer)
    qtbot.addWidget(widget)
    widget.check.value = "against mask"
    widget.heatmap.value, widget.mask.value = heat, pred
    assert run(qtbot, widget) == "done"
    h, m = read_volume(files["heat"]), read_volume(files["pred"])
    expected = truth_scores(h.data, m.data > 0, spacing=h.spacing,
                            tolerance_mm=widget.tolerance.value, k=float(widget.top_k.value))
    (row,) = widget.table.rows
    for key, value in expected.items():
        assert row[key] == pytest.approx(value), key
    widget.check.value = "by region"
    widget.regions.value = pred
    assert run(qtbot, widget) == "done"
    table = relevance_by_region(h.data, m.data, spacing=h.spacing)
    assert [r["sum"] for r in widget.table.rows] == pytest.approx(list(table["sum"]))
    # the attribution widget's region check is the same one; a heatmap computed in the
    # viewer (scale and translate of its image, no file orientation) overlays the file layers
    check_same_grid(heat, pred)
    computed = viewer.add_image(heat.data, name="computed", scale=heat.scale,
                                translate=heat.translate)
    check_same_grid(computed, pred)
    check_same_grid(pred, computed)


def _refusal(qtbot, widget, monkeypatch) -> str:
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget.job.run_button.click()
    qtbot.waitUntil(lambda: bool(shown), timeout=10000)
    assert not widget.job.running  # refused before any work started
    (message,) = shown
    return message


def test_registration_and_segmentation_refuse_labels_off_their_image(
        qtbot, make_napari_viewer, monkeypatch):
    from napari_xaimed.viewer.widgets.registration import RegistrationWidget
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    image = np.random.default_rng(1).random((12, 12, 12)).astype(np.float32)
    viewer.add_image(image, name="fixed")
    viewer.add_image(image, name="moving", translate=(2.0, 0.0, 0.0))
    viewer.add_labels((image > 0.5).astype(np.uint8), name="labels")  # on the fixed grid
    widget = RegistrationWidget(viewer)
    qtbot.addWidget(widget)
    widget.fixed.value, widget.moving.value = viewer.layers["fixed"], viewer.layers["moving"]
    widget.moving_labels.value = viewer.layers["labels"]
    message = _refusal(qtbot, widget, monkeypatch)
    assert "'moving' and 'labels' do not overlay" in message
    assert "(2.00, 0.00, 0.00) and (0.00, 0.00, 0.00) mm are 2 mm apart" in message

    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value, widget.method.value = viewer.layers["moving"], "kmeans"
    widget.tissue_mask.value = viewer.layers["labels"]
    assert "'moving' and 'labels' do not overlay" in _refusal(qtbot, widget, monkeypatch)
