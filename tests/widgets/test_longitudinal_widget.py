"""The longitudinal explanation widget: change layers on the current grid, a quick ANTs
registration in its own process, reruns that replace their layers."""

import json

import numpy as np
import pytest

from napari_xaimed.samples import longitudinal_pair
from napari_xaimed.viewer.heatmaps import DIVERGING
from napari_xaimed.viewer.widgets.longitudinal import IDENTITY, LongitudinalWidget

WHATS = ("current", "carried", "change", "change normalised")


def wait(qtbot, panel, click, timeout=120000):
    with qtbot.waitSignal(panel.finished, timeout=timeout) as blocker:
        click()
    return blocker.args[0]


@pytest.fixture
def small():
    return longitudinal_pair(shape=(32, 36, 34), spacing=(1.5, 1.0, 0.9), seed=4, n_lesions=1,
                             new_lesion_radius_mm=5.0)


def add_pair(viewer, pair, translate=(0.0, 0.0, 0.0)):
    prior = viewer.add_image(pair.moving, name="prior", scale=pair.spacing, translate=translate)
    current = viewer.add_image(pair.fixed, name="current", scale=pair.spacing,
                               translate=translate)
    return prior, current


def test_quick_registration_adds_change_layers_on_the_current_grid(qtbot, make_napari_viewer,
                                                                   small):
    viewer = make_napari_viewer()
    prior, current = add_pair(viewer, small, translate=(2.0, -1.0, 3.0))
    source = (prior.data.copy(), current.data.copy())
    widget = LongitudinalWidget(viewer)
    assert widget.prior.value is prior and widget.current.value is current
    widget.alignment.value = "SyN"
    widget.iterations.value = "20, 10, 0"
    widget.device.value = "cpu"
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    names = [f"Grad-CAM {what} [prior->current]" for what in WHATS]
    names.append("Feature change [prior->current]")
    for name in names:
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, current.scale)
        np.testing.assert_allclose(layer.translate, current.translate)
        assert layer.data.shape == current.data.shape
        prov = layer.metadata["xaimed"]
        assert prov["kind"] == "longitudinal attribution"
        assert prov["sources"] == ["prior", "current"]
        assert prov["params"]["registration"]["transform"] == "SyN"
        assert json.loads(json.dumps(prov))["params"]["layer"] == "features"
    change = viewer.layers["Grad-CAM change [prior->current]"]
    low, high = change.contrast_limits
    assert change.colormap.name == DIVERGING and low == pytest.approx(-high)
    # every map kept, only the change shown, with its colour bar
    assert [viewer.layers[n].visible for n in names] == [n == change.name for n in names]
    assert change.colorbar.visible
    result = widget.result
    np.testing.assert_array_equal(change.data, result.change)
    # ANTs found a deformation close to the known one, and the change sits at the new lesion
    error = np.linalg.norm(result.displacement - small.displacement, axis=-1)[small.body]
    assert error.mean() < 0.6 * np.linalg.norm(small.displacement, axis=-1)[small.body].mean()
    lesion, elsewhere = small.new_lesion, small.body & ~small.new_lesion
    assert change.data[lesion].mean() > 5 * abs(change.data[elsewhere].mean())
    rows = widget.channels.rows
    assert rows and abs(rows[0]["weight x change"]) >= abs(rows[-1]["weight x change"])
    np.testing.assert_array_equal(prior.data, source[0])
    np.testing.assert_array_equal(current.data, source[1])


def test_rerun_with_another_method_replaces_the_outputs(qtbot, make_napari_viewer, small):
    viewer = make_napari_viewer()
    add_pair(viewer, small)
    viewer.add_image(small.fixed, name="Grad-CAM change [prior->current]")  # the user's own
    user = viewer.layers[-1]
    widget = LongitudinalWidget(viewer)
    widget.alignment.value = IDENTITY
    widget.device.value = "cpu"
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    feature = viewer.layers["Feature change [prior->current]"]
    ours = [layer for layer in viewer.layers if "xaimed" in layer.metadata]
    assert len(ours) == 5
    assert ours[0].metadata["xaimed"]["params"]["registration"]["source"].startswith("identity")
    assert "Grad-CAM change [prior->current] [1]" in viewer.layers  # napari numbered ours
    assert widget.channels.rows and widget.job.status.text()
    widget.method.value = "saliency"
    assert widget.channels.rows == [] and widget.job.status.text() == ""  # stale: cleared
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    now = [layer for layer in viewer.layers if "xaimed" in layer.metadata]
    assert len(now) == 5
    assert {layer.name for layer in now} == {
        *(f"Saliency {what} [prior->current]" for what in WHATS),
        "Feature change [prior->current]"}
    assert viewer.layers["Feature change [prior->current]"] is feature  # updated in place
    assert user in viewer.layers  # the user's layer of the same name is never touched
    assert feature.metadata["xaimed"]["params"]["method"] == "saliency"


def test_same_layer_twice_is_refused_without_running(qtbot, make_napari_viewer, small):
    viewer = make_napari_viewer()
    prior, _ = add_pair(viewer, small)
    widget = LongitudinalWidget(viewer)
    widget.prior.value = widget.current.value = prior
    widget.job.run_button.click()
    assert not widget.job.running
    assert not [layer for layer in viewer.layers if "xaimed" in layer.metadata]
