"""Cancel in every widget: the job ends within a second, a spawned ANTs process is killed, no
temporary file is left, no layer is added and the input layers keep their data."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pytest

from napari_xaimed._core import spawned

# Cancel acts at the job's next step; a second covers a step plus the Qt round trip.
LATENCY_S = 1.0


@pytest.fixture
def clean_tmp(tmp_path, monkeypatch):
    """A private temp dir for the test, so leftovers are ours and can be listed exactly."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def snapshot(viewer: Any) -> dict[str, np.ndarray]:
    return {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers
            if isinstance(layer.data, np.ndarray)}


def cancel_when(qtbot, widget, ready, *, timeout_ms: int = 60000) -> float:
    """Click Run, wait until ``ready()``, click Cancel; return seconds from Cancel to the end."""
    with qtbot.waitSignal(widget.job.finished, timeout=timeout_ms) as blocker:
        widget.job.run_button.click()
        qtbot.waitUntil(lambda: ready() or not widget.job.running, timeout=timeout_ms)
        assert widget.job.running, f"ended before the cancel: {widget.job.status.text()}"
        started = time.perf_counter()
        widget.job.cancel_button.click()
    latency = time.perf_counter() - started
    assert blocker.args[0] == "cancelled"
    assert "Cancelled" in widget.job.status.text()
    assert widget.job.run_button.isEnabled() and not widget.job.running
    print(f"{type(widget).__name__}: cancelled in {latency * 1000:.0f} ms")
    return latency


def assert_nothing_changed(viewer: Any, before: dict[str, np.ndarray], tmp) -> None:
    assert [layer.name for layer in viewer.layers] == list(before)
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert sorted(os.listdir(tmp)) == []


def progressed(widget, at_least: int = 1):
    return lambda: widget.job.bar.maximum() > 1 and widget.job.bar.value() >= at_least


def blobs(shape: tuple[int, int, int], n: int, seed: int) -> np.ndarray:
    """``n`` balls of radius 2-4 voxels labelled 1..n (later ones overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint16)
    ball = np.indices((9, 9, 9)) - 4
    distance = np.sqrt((ball ** 2).sum(0))
    for k in range(1, n + 1):
        corner = [int(rng.integers(0, s - 9)) for s in shape]
        window = labels[tuple(slice(c, c + 9) for c in corner)]
        window[distance <= rng.uniform(2, 4)] = k
    return labels


def test_segmentation_model_with_many_windows(qtbot, make_napari_viewer, clean_tmp):
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(0, 1, (96, 128, 128)).astype(np.float32), name="ct")
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["ct"]
    widget.method.value = "model"
    widget.overlap.value = 0.9  # thousands of windows: many seconds of work
    widget.sw_batch_size.value = 1
    widget.device.value = "cpu"
    before = snapshot(viewer)
    latency = cancel_when(qtbot, widget, progressed(widget, 2))
    assert latency < LATENCY_S
    assert_nothing_changed(viewer, before, clean_tmp)

    # the next run works: a cancel unwound from the GUI thread once crashed it (segfault)
    widget.overlap.value = 0.0
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done"
    assert "Model segmentation [ct]" in viewer.layers


def test_lazy_otsu_segmentation(qtbot, make_napari_viewer, clean_tmp):
    """Otsu on a dask layer: a step per slab of each pass, cancelled between slabs, its
    half-written labels store removed."""
    import dask.array as da

    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    volume = np.random.default_rng(2).normal(0, 1, (512, 256, 256)).astype(np.float32)
    viewer.add_image(da.from_array(volume, chunks=(32, -1, -1)), name="lazy ct")
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    widget.method.value = "otsu"
    latency = cancel_when(qtbot, widget, progressed(widget, 2))
    assert latency < LATENCY_S  # one slab of 128 planes is the unit of work
    assert_nothing_changed(viewer, {"lazy ct": volume}, clean_tmp)


def test_segmentation_atropos_kills_its_process(qtbot, make_napari_viewer, clean_tmp):
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(1)
    z, y, x = np.indices((64, 96, 96))
    image = (x // 32).astype(np.float32) + rng.normal(0, 0.4, z.shape).astype(np.float32)
    viewer.add_image(image, name="mri")
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["mri"]
    widget.method.value = "atropos"
    widget.iterations.value = 100
    widget.mrf.value = 0.3
    before = snapshot(viewer)
    running: list = []

    def child_running() -> bool:
        running.extend(spawned._RUNNING)
        return bool(running)

    latency = cancel_when(qtbot, widget, child_running)
    assert latency < LATENCY_S
    assert all(process.poll() is not None for process in running)
    assert not spawned._RUNNING
    assert_nothing_changed(viewer, before, clean_tmp)


def test_evaluation_of_large_label_volumes(qtbot, make_napari_viewer, clean_tmp):
    from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget

    viewer = make_napari_viewer()
    reference = blobs((192, 192, 192), 3000, seed=0)  # about 4 s of matching and distances
    prediction = np.roll(reference, 1, axis=2)
    viewer.add_labels(reference, name="reference")
    viewer.add_labels(prediction, name="prediction")
    widget = EvaluationWidget(viewer)
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    widget.instance_input.value = True
    widget.voronoi.value = True
    before = snapshot(viewer)
    # the Voronoi regions' distance transform is one long C call (1-2 s here): cancel inside it
    latency = cancel_when(qtbot, widget, lambda: "Voronoi regions" in widget.job.status.text())
    assert latency < LATENCY_S
    assert_nothing_changed(viewer, before, clean_tmp)


def test_registration_syn_kills_ants(qtbot, make_napari_viewer, clean_tmp):
    from napari_xaimed.viewer.widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = RegistrationWidget(viewer)
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.transform.value = "SyN"
    widget.iterations.value = "500, 500, 500"
    before = snapshot(viewer)
    running: list = []

    def deformable_stage() -> bool:
        running.extend(spawned._RUNNING)
        return bool(running) and "stage" in widget.job.status.text()

    latency = cancel_when(qtbot, widget, deformable_stage, timeout_ms=120000)
    assert latency < LATENCY_S
    assert running and all(process.poll() is not None for process in running)
    assert not spawned._RUNNING
    assert_nothing_changed(viewer, before, clean_tmp)
    assert not widget.carry_job.run_button.isEnabled()  # nothing to carry along


def test_longitudinal_registration_kills_ants(qtbot, make_napari_viewer, clean_tmp):
    from napari_xaimed.viewer.widgets.longitudinal import LongitudinalWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "longitudinal")
    widget = LongitudinalWidget(viewer)
    assert widget.prior.value is viewer.layers["prior"]
    widget.alignment.value = "SyN"
    widget.iterations.value = "500, 500, 500"
    before = snapshot(viewer)
    running: list = []

    def deformable_stage() -> bool:
        running.extend(spawned._RUNNING)
        return bool(running) and "stage" in widget.job.status.text()

    latency = cancel_when(qtbot, widget, deformable_stage, timeout_ms=120000)
    assert latency < LATENCY_S
    assert running and all(process.poll() is not None for process in running)
    assert not spawned._RUNNING
    assert_nothing_changed(viewer, before, clean_tmp)
    assert widget.result is None


@pytest.mark.parametrize("method, settings", [
    ("integrated_gradients", {"steps": 512}),
    ("occlusion", {"window": 4, "stride": 1}),
    ("smoothgrad", {"samples": 256}),
])
def test_attribution(qtbot, make_napari_viewer, clean_tmp, method, settings):
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.methods.value = [method]
    widget.device.value = "cpu"
    for name, value in settings.items():
        getattr(widget, name).value = value
    before = snapshot(viewer)
    latency = cancel_when(qtbot, widget, progressed(widget, 2))
    assert latency < LATENCY_S
    assert_nothing_changed(viewer, before, clean_tmp)


@pytest.mark.parametrize("check", ["ensemble", "randomisation", "compare methods",
                                   "deletion / insertion"])
def test_explanation_checks(qtbot, make_napari_viewer, clean_tmp, tmp_path, check):
    from napari_xaimed.models.lesion_classifier import WEIGHTS
    from napari_xaimed.viewer.widgets.explanations import ExplanationWidget

    members = []
    for name in ("a", "b", "c"):  # the bundled model has no dropout: an ensemble of files
        shutil.copy(WEIGHTS, tmp_path / f"{name}.pt")
        shutil.copy(WEIGHTS.with_suffix(".json"), tmp_path / f"{name}.json")
        members.append(tmp_path / f"{name}.pt")

    viewer = make_napari_viewer()
    viewer.open_sample("napari-xaimed", "lesion")
    ct = viewer.layers["lesion ct"]
    rng = np.random.default_rng(2)
    viewer.add_image(rng.random(ct.data.shape).astype(np.float32), name="heat")
    widget = ExplanationWidget(viewer)
    widget.check.value = check
    widget.image.value = ct
    widget.heatmap.value = viewer.layers["heat"]
    widget.mask.value = viewer.layers["lesion truth"]
    widget.device.value = "cpu"
    widget.members.value = members
    widget.method.value = "integrated_gradients"
    widget.methods.value = ["integrated_gradients", "smoothgrad", "occlusion"]
    widget.steps.value = 200
    before = snapshot(viewer)
    latency = cancel_when(qtbot, widget, progressed(widget, 1))
    assert latency < LATENCY_S
    assert_nothing_changed(viewer, before, clean_tmp)


def test_lazy_sliding_window_attribution(qtbot, make_napari_viewer, clean_tmp):
    """A segmentation network on a dask layer: explained band by band, cancelled between
    bands, its scratch folder and temporary stores removed."""
    import dask.array as da

    from napari_xaimed.models.lesion_segmenter import WEIGHTS
    from napari_xaimed.viewer.widgets.attribution import AttributionWidget

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 1, (128, 64, 64)).astype(np.float32)
    viewer.add_image(da.from_array(volume, chunks=(16, -1, -1)), name="lazy ct")
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    widget.model_source.value = "file"
    widget.model_file.value = WEIGHTS
    widget.methods.value = ["integrated_gradients"]
    widget.steps.value = 256
    widget.device.value = "cpu"
    before = {"lazy ct": volume}
    latency = cancel_when(qtbot, widget, progressed(widget, 2))
    assert latency < 5 * LATENCY_S  # a band of windows' IG steps is the unit of work
    assert_nothing_changed(viewer, before, clean_tmp)
