"""The registration widget: layers over the fixed image, a quality table, carry-along, cancel."""

import os
import tempfile

import numpy as np
import pytest

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
    assert jac.colormap.name == "bwr"
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
