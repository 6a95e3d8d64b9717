"""The segmentation widget runs its job in a worker, replaces its own output, and fails cleanly."""

import time

import numpy as np
import pytest

from napari_xaimed._progress import Progress
from napari_xaimed._widgets._job import JobPanel
from napari_xaimed._widgets.segmentation import SegmentationWidget


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    viewer.layers["lesion ct"].scale = (2.0, 1.0, 1.0)
    return viewer


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job.finished, timeout=30000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_segments_into_a_layer_over_its_source(qtbot, viewer_with_sample):
    viewer = viewer_with_sample
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.classes.value = 4
    widget.smoothing.value = 1.0
    widget.min_size.value = 20.0
    source = viewer.layers["lesion ct"].data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    out = viewer.layers["Segmentation [lesion ct]"]
    truth = viewer.layers["lesion truth"].data > 0
    assert out._type_string == "labels"
    np.testing.assert_allclose(out.scale, (2.0, 1.0, 1.0))
    found = out.data > 0
    assert 2 * (found & truth).sum() / (found.sum() + truth.sum()) > 0.85
    prov = out.metadata["xaimed"]
    assert prov["kind"] == "segmentation" and prov["sources"] == ["lesion ct"]
    assert prov["params"]["classes"] == 4 and prov["seconds"] >= 0
    np.testing.assert_array_equal(viewer.layers["lesion ct"].data, source)  # input untouched

    # a second run with other settings updates the same layer instead of adding a copy
    n_layers = len(viewer.layers)
    widget.classes.value = 2
    assert run_and_wait(qtbot, widget) == "done"
    assert len(viewer.layers) == n_layers
    assert viewer.layers["Segmentation [lesion ct]"].metadata["xaimed"]["params"]["classes"] == 2


def test_bad_input_is_a_notification_and_adds_nothing(qtbot, viewer_with_sample, monkeypatch):
    viewer = viewer_with_sample
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer.add_image(np.zeros((8, 8), np.float32), name="flat")
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["flat"]
    n_layers = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "failed"
    assert len(viewer.layers) == n_layers
    assert shown and "3D" in shown[0]
    assert "Failed" in widget.job.status.text()
    assert widget.job.run_button.isEnabled()


def slow_steps(n, delay, made):
    for i in range(n):
        time.sleep(delay)
        yield Progress(i + 1, n, f"step {i + 1}")
    made.append("result")
    return "result"


def test_cancel_stops_between_steps_and_adds_nothing(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    made, results = [], []
    with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
        panel.start(slow_steps(200, 0.02, made), lambda r, s: results.append(r), "slow job")
        qtbot.waitUntil(lambda: panel.bar.value() >= 2, timeout=5000)
        assert panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
        started = time.perf_counter()
        panel.cancel()
    assert blocker.args == ["cancelled"]
    assert time.perf_counter() - started < 1.0
    assert made == [] and results == []
    assert "Cancelled" in panel.status.text()
    assert panel.run_button.isEnabled() and not panel.running


def test_progress_reaches_the_bar(qtbot):
    panel = JobPanel()
    qtbot.addWidget(panel)
    results = []
    with qtbot.waitSignal(panel.finished, timeout=10000) as blocker:
        panel.start(slow_steps(5, 0.01, []), lambda r, s: results.append(r), "short job")
    assert blocker.args == ["done"] and results == ["result"]
    assert panel.bar.maximum() == 5 and panel.bar.value() == 5
