"""The attribution widget: one heatmap layer per method over the image, errors as notices."""

import numpy as np
import pytest

from napari_xaimed._widgets.attribution import AttributionWidget


@pytest.fixture
def viewer_with_lesion(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    viewer.layers["lesion ct"].scale = (2.0, 1.0, 1.0)
    return viewer


def run_and_wait(qtbot, widget):
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_each_method_becomes_a_heatmap_over_the_image(qtbot, viewer_with_lesion):
    viewer = viewer_with_lesion
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.methods.value = ["integrated_gradients", "gradcam"]
    widget.steps.value = 8
    source = viewer.layers["lesion ct"].data.copy()
    assert run_and_wait(qtbot, widget) == "done"
    ig = viewer.layers["Integrated Gradients [lesion ct]"]
    cam = viewer.layers["Grad-CAM [lesion ct]"]
    for layer in (ig, cam):
        assert layer.data.shape == source.shape
        np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    low, high = ig.contrast_limits
    assert ig.colormap.name == "bwr" and low == pytest.approx(-high)  # signed: symmetric
    assert cam.colormap.name == "inferno" and cam.contrast_limits[0] == 0  # unsigned
    prov = ig.metadata["xaimed"]
    assert prov["kind"] == "attribution" and prov["params"]["method"] == "integrated_gradients"
    assert prov["params"]["steps"] == 8 and len(prov["model"]["sha256"]) == 64
    np.testing.assert_array_equal(viewer.layers["lesion ct"].data, source)

    n_layers = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "done"  # a re-run updates, no copies
    assert len(viewer.layers) == n_layers


def test_missing_model_file_and_no_method_are_notifications(qtbot, viewer_with_lesion,
                                                             monkeypatch):
    shown = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    widget = AttributionWidget(viewer_with_lesion)
    widget.methods.value = []
    widget.job.run_button.click()
    assert "at least one method" in shown[-1]
    widget.methods.value = ["saliency"]
    widget.model_source.value = "file"
    widget.model_file.value = "/nonexistent/model.pt"
    widget.job.run_button.click()
    assert "model file" in shown[-1]
    assert not widget.job.running
