"""The registration and longitudinal widgets on lazy (dask-backed, larger-than-memory) layers."""

import threading
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.samples import longitudinal_pair

SHAPE, SPACING = (32, 48, 48), (1.5, 1.0, 1.0)
FIELD = ("Jacobian", "Folded", "Warped grid", "Displacement")


class Recording:
    """An array that notes the thread and the voxel count of every read."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, 3
        self.reads = []

    def __getitem__(self, key):
        block = self.array[key]
        self.reads.append((threading.current_thread() is threading.main_thread(), block.size))
        return block


@pytest.fixture(scope="module")
def pair():
    return longitudinal_pair(SHAPE, spacing=SPACING, seed=1)


def lazy_layers(viewer, pair):
    fixed, moving = Recording(pair.fixed), Recording(pair.moving)
    viewer.add_image(da.from_array(fixed, chunks=(8, -1, -1)), name="current",
                     scale=SPACING, translate=(1.0, 2.0, -3.0), contrast_limits=(0, 1))
    viewer.add_image(da.from_array(moving, chunks=(8, -1, -1)), name="prior", scale=SPACING,
                     translate=(1.0, 2.0, -3.0), contrast_limits=(0, 1))
    return fixed, moving


def wait(qtbot, panel, click, timeout=120000):
    with qtbot.waitSignal(panel.finished, timeout=timeout) as blocker:
        click()
    return blocker.args[0]


def test_registration_of_lazy_layers_runs_on_downsampled_copies(qtbot, make_napari_viewer,
                                                                pair, monkeypatch):
    from napari_xaimed.viewer.widgets import registration as module

    monkeypatch.setattr(module, "LAZY_MAX_VOXELS", 16 * 24 * 24)  # factors (2, 2, 2)
    viewer = make_napari_viewer()
    fixed_source, moving_source = lazy_layers(viewer, pair)
    fixed, moving = viewer.layers["current"], viewer.layers["prior"]
    user = {layer.name: (layer.data, tuple(layer.scale), tuple(layer.translate))
            for layer in viewer.layers}
    widget = module.RegistrationWidget(viewer)
    widget.fixed.value, widget.moving.value = fixed, moving
    assert "block-mean copies" in widget.info.value
    widget.transform.value = "Affine"
    fixed_source.reads.clear()
    moving_source.reads.clear()
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done", \
        widget.job.status.text()
    plane = SHAPE[1] * SHAPE[2]
    for source in (fixed_source, moving_source):  # the GUI thread read a plane at most
        assert source.reads and all(size <= plane for main, size in source.reads if main)
    warped = viewer.layers["Warped [prior->current]"]
    assert is_lazy(warped.data) and warped.data.shape == SHAPE
    np.testing.assert_allclose(warped.scale, SPACING)
    np.testing.assert_allclose(warped.translate, (1.0, 2.0, -3.0))
    prov = warped.metadata["xaimed"]
    store = prov["lazy"]["warped_store"]
    assert store.endswith("warped.zarr") and "xaimed-registration-" in store
    assert prov["inputs"]["fixed"]["sha256"] is None  # not read whole to hash it
    coarse_scale = np.multiply((2, 2, 2), SPACING)
    coarse_translate = np.array([1.0, 2.0, -3.0]) + 0.5 * np.asarray(SPACING)
    for what in FIELD:
        layer = viewer.layers[f"{what} [prior->current]"]
        np.testing.assert_allclose(layer.scale[-3:], coarse_scale)
        np.testing.assert_allclose(layer.translate[-3:], coarse_translate)
    assert viewer.layers["Jacobian [prior->current]"].data.shape == (16, 24, 24)
    rows = {r["figure"]: r for r in widget.quality.rows}
    assert rows["NCC"]["after"] > rows["NCC"]["before"]
    full = np.asarray(warped.data)
    assert np.corrcoef(full.ravel(), pair.fixed.ravel())[0, 1] > \
        np.corrcoef(pair.moving.ravel(), pair.fixed.ravel())[0, 1]
    for layer in (fixed, moving):  # the user's layers are untouched
        data, scale, translate = user[layer.name]
        assert layer.data is data and tuple(layer.scale) == scale
        assert tuple(layer.translate) == translate

    count = len(viewer.layers)
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    assert len(viewer.layers) == count  # a re-run replaces its outputs
    rerun_store = viewer.layers["Warped [prior->current]"].metadata["xaimed"]["lazy"][
        "warped_store"]
    assert rerun_store != store
    # the first run's store went with the layer it backed; the rerun's is read by the layer
    assert not Path(store).exists() and Path(rerun_store).exists()

    # carrying a layer along: at full resolution, lazily, on the fixed grid
    viewer.add_labels(da.from_array(pair.moving_labels, chunks=(8, -1, -1)),
                      name="prior organs", scale=SPACING, translate=(1.0, 2.0, -3.0))
    widget.reset_choices()
    widget.carry_layer.value = viewer.layers["prior organs"]
    assert wait(qtbot, widget.carry_job, widget.carry_job.run_button.click) == "done"
    carried = viewer.layers["prior organs [prior->current]"]
    assert carried._type_string == "labels" and is_lazy(carried.data)
    assert carried.data.shape == SHAPE
    np.testing.assert_allclose(carried.translate, (1.0, 2.0, -3.0))
    assert set(np.unique(np.asarray(carried.data))) <= set(np.unique(pair.moving_labels))
    carried_store = Path(carried.metadata["xaimed"]["params"]["store"])
    assert carried_store.exists()

    from napari_xaimed import XaimedError
    from napari_xaimed.cli.rerun import recompute

    for layer in (warped, carried):  # not silently redone as a full-size registration
        with pytest.raises(XaimedError, match="downsampled copies"):
            recompute(viewer.layers[layer.name].metadata["xaimed"])
    viewer.layers.remove(carried.name)
    assert not carried_store.exists() and Path(rerun_store).exists()


def test_longitudinal_on_lazy_layers_explains_downsampled_copies(qtbot, make_napari_viewer,
                                                                 pair, monkeypatch):
    from napari_xaimed.viewer.widgets import longitudinal as module

    monkeypatch.setattr(module, "LAZY_MAX_VOXELS", 16 * 24 * 24)  # factors (2, 2, 2)
    shown = []
    monkeypatch.setattr(module, "show_info", shown.append)
    viewer = make_napari_viewer()
    fixed_source, moving_source = lazy_layers(viewer, pair)
    widget = module.LongitudinalWidget(viewer)
    assert widget.prior.value is viewer.layers["prior"]
    assert "block-mean copies" in widget.info.value
    widget.alignment.value = module.IDENTITY
    widget.method.value = "saliency"
    widget.device.value = "cpu"
    fixed_source.reads.clear()
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done", \
        widget.job.status.text()
    plane = SHAPE[1] * SHAPE[2]
    assert all(size <= plane for main, size in fixed_source.reads if main)
    coarse_scale = np.multiply((2, 2, 2), SPACING)
    coarse_translate = np.array([1.0, 2.0, -3.0]) + 0.5 * np.asarray(SPACING)
    names = [n for n in viewer.layers if n.name.endswith("[prior->current]")]
    assert len(names) == 5
    for layer in names:
        assert layer.data.shape == (16, 24, 24)
        np.testing.assert_allclose(layer.scale[-3:], coarse_scale)
        np.testing.assert_allclose(layer.translate[-3:], coarse_translate)
        assert layer.metadata["xaimed"]["lazy"]["current_factors"] == [2, 2, 2]
    assert shown and "downsampled" in shown[0]
    count = len(viewer.layers)
    assert wait(qtbot, widget.job, widget.job.run_button.click) == "done"
    assert len(viewer.layers) == count  # a re-run replaces its outputs
    assert viewer.layers["prior"].data.shape == SHAPE  # the user's layers are untouched
