"""The registration widget: layers over the fixed image, a quality table, carry-along, cancel."""

import os
import tempfile

import numpy as np
import pytest

from napari_xaimed.viewer.heatmaps import DIVERGING
from napari_xaimed.viewer.widgets.registration import RegistrationWidget

NAMES = ("Warped", "Jacobian", "Folded", "Warped grid", "Displacement")


@pytest.fixture
def viewer_with_pair(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    return viewer


def wait(qtbot, panel, click, timeout=120000):
    with qtbot.waitSignal(panel.finished, timeout=timeout) as blocker:
        click()
    return blocker.args[0]


def test_register_adds_layers_on_the_fixed_grid_and_carries_labels(qtbot, viewer_with_pair):
    viewer = viewer_with_pair
    fixed, moving = viewer.layers["current"], viewer.layers["prior"]
    moving.translate = (1.0, 0.0, 0.0)  # a world offset the registration must respect
    # ... and the prior's labels with it: labels off their image's grid are refused
    viewer.layers["prior organs"].translate = (1.0, 0.0, 0.0)
    source = moving.data.copy()
    widget = RegistrationWidget(viewer)
    widget.fixed.value, widget.moving.value = fixed, moving
    widget.transform.value = "SyNOnly"
    widget.iterations.value = "20, 5"
    widget.fixed_labels.value = viewer.layers["current organs"]
    widget.moving_labels.value = viewer.layers["prior organs"]
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    for what in NAMES:
        layer = viewer.layers[f"{what} [prior->current]"]
        np.testing.assert_allclose(layer.scale[-3:], fixed.scale[-3:])
        assert layer.metadata["xaimed"]["kind"] == "registration"
    jac = viewer.layers["Jacobian [prior->current]"]
    low, high = jac.contrast_limits
    assert low < 1 < high and (low + high) / 2 == pytest.approx(1.0)
    assert jac.colormap.name == DIVERGING
    vectors = viewer.layers["Displacement [prior->current]"]
    assert vectors._type_string == "vectors" and len(vectors.data) > 0
    rows = {r["figure"]: r for r in widget.quality.rows}
    assert rows["NCC"]["after"] > rows["NCC"]["before"]
    assert any(name.startswith("Dice label") for name in rows)
    np.testing.assert_array_equal(moving.data, source)  # the input is untouched

    # carry the prior's organ labels along: labels stay labels, on the fixed grid
    widget.carry_layer.value = viewer.layers["prior organs"]
    assert wait(qtbot, widget.carry_job, widget.carry_job.run_button.click) == "done"
    carried = viewer.layers["prior organs [prior->current]"]
    assert carried._type_string == "labels"
    assert set(np.unique(carried.data)) <= set(np.unique(viewer.layers["prior organs"].data))

    # a second run replaces its outputs instead of piling up copies
    n_layers = len(viewer.layers)
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    assert len(viewer.layers) == n_layers


def test_cancel_adds_nothing_and_leaves_no_temporary_folder(qtbot, viewer_with_pair):
    viewer = viewer_with_pair
    widget = RegistrationWidget(viewer)
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.iterations.value = "500, 500, 500"
    n_layers = len(viewer.layers)
    before = set(os.listdir(tempfile.gettempdir()))
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
        qtbot.waitUntil(lambda: "stage" in widget.job.status.text(), timeout=30000)
        widget.job.cancel_button.click()
    assert blocker.args[0] == "cancelled"
    assert len(viewer.layers) == n_layers
    qtbot.waitUntil(lambda: set(os.listdir(tempfile.gettempdir())) - before == set(),
                    timeout=10000)


def test_bad_choices_are_notifications(qtbot, viewer_with_pair, monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = viewer_with_pair
    widget = RegistrationWidget(viewer)
    widget.fixed.value = widget.moving.value = viewer.layers["current"]
    widget.job.run_button.click()
    assert "same layer" in shown[-1]
    widget.moving.value = viewer.layers["prior"]
    widget.iterations.value = "ten, 5"
    widget.job.run_button.click()
    assert "whole numbers" in shown[-1]
    widget.carry_job.run_button.setEnabled(True)
    widget.carry_job.run_button.click()
    assert "Register first" in shown[-1]
    assert not widget.job.running


def test_checkerboard_alternates_tiles_of_the_two_scaled_images():
    from napari_xaimed.viewer.widgets.registration_view import checkerboard

    first, second = np.full((4, 4, 6), 10.0), np.full((4, 4, 6), 30.0)
    board = checkerboard(first, second, 2, ((0.0, 20.0), (20.0, 40.0)))
    # by hand: tile (i//2 + j//2 + k//2) even -> first scaled (0.5), odd -> second (0.5 too)
    np.testing.assert_allclose(board, 0.5)
    board = checkerboard(first, second, 2)
    expected = np.where((np.arange(4)[:, None, None] // 2 + np.arange(4)[None, :, None] // 2
                         + np.arange(6)[None, None, :] // 2) % 2, 30.0, 10.0)
    np.testing.assert_array_equal(board, expected)
    assert board[0, 0, 0] == 10.0 and board[0, 0, 2] == 30.0 and board[2, 2, 0] == 10.0


def test_fixed_and_warped_show_first_and_the_sample_error_is_measured(qtbot, viewer_with_pair):
    """Default view: fixed and warped shown, the field's layers added hidden; the table's rows
    all visible; the longitudinal sample's known field gives |u - u_true| (mm) as a layer and
    its mean and 95th percentile inside the body in the table."""
    from napari_xaimed.samples import longitudinal_pair

    viewer = viewer_with_pair
    fixed, moving = viewer.layers["current"], viewer.layers["prior"]
    widget = RegistrationWidget(viewer)
    widget.fixed.value, widget.moving.value = fixed, moving
    widget.transform.value = "SyNOnly"
    widget.iterations.value = "20, 5"
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    shown = {what: viewer.layers[f"{what} [prior->current]"].visible
             for what in (*NAMES, "Error vs known field")}
    assert shown == {"Warped": True, "Jacobian": False, "Folded": False, "Warped grid": False,
                     "Displacement": False, "Error vs known field": False}
    assert fixed.visible and viewer.layers["Warped [prior->current]"].opacity == 0.5
    assert viewer.layers["Jacobian [prior->current]"].colorbar.visible

    truth = longitudinal_pair(seed=0)  # the sample's own known field, independent of ANTs
    expected = np.linalg.norm(widget.result.displacement - truth.displacement, axis=-1)
    error = viewer.layers["Error vs known field [prior->current]"]
    np.testing.assert_allclose(error.data, expected, rtol=1e-5, atol=1e-5)
    rows = {r["figure"]: r for r in widget.quality.rows}
    inside = expected[truth.body]
    assert rows["error vs known field, mean (mm)"]["after"] == pytest.approx(inside.mean(),
                                                                             rel=1e-5)
    assert rows["error vs known field, 95th pct (mm)"]["after"] == pytest.approx(
        np.percentile(inside, 95), rel=1e-5)
    # the registration brought the scans closer than no registration (error = |u_true|)
    assert rows["error vs known field, mean (mm)"]["after"] < \
        rows["error vs known field, mean (mm)"]["before"]
    table = widget.quality.table
    needed = table.horizontalHeader().sizeHint().height() + sum(
        table.rowHeight(i) for i in range(table.rowCount()))
    assert table.rowCount() == len(rows) >= 8 and table.minimumHeight() >= needed

    # checkerboard: a new layer from fixed and warped, remade when the tile size changes
    widget.view.checker.value = True
    board = viewer.layers["Checkerboard [prior->current]"]
    warped = viewer.layers["Warped [prior->current]"]
    assert board.visible and not warped.visible
    lo_f, hi_f = fixed.contrast_limits
    lo_w, hi_w = warped.contrast_limits
    np.testing.assert_allclose(board.data[0, 0, :8], (fixed.data[0, 0, :8] - lo_f) / (hi_f - lo_f),
                               rtol=1e-5)
    np.testing.assert_allclose(board.data[0, 0, 8:16],
                               (warped.data[0, 0, 8:16] - lo_w) / (hi_w - lo_w), rtol=1e-5)
    widget.view.tile.value = 4
    np.testing.assert_allclose(board.data[0, 0, 4:8],
                               (warped.data[0, 0, 4:8] - lo_w) / (hi_w - lo_w), rtol=1e-5)
    widget.view.checker.value = False
    assert not board.visible and warped.visible
    widget.view.blend.value = False
    assert warped.opacity == 1.0
    assert widget.job.status.text()
    widget.moving.value = viewer.layers["Warped [prior->current]"]  # other inputs: stale lines
    assert widget.quality.rows == [] and widget.job.status.text() == ""
