"""The bad-input table in the viewer: each bad input is a notification naming the fix, napari
keeps running, the input layers keep their data and geometry, and no output layer is added."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from napari_xaimed._core.progress import Progress
from napari_xaimed.attribution import load_model
from napari_xaimed.viewer.widgets.attribution import AttributionWidget
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget
from napari_xaimed.viewer.widgets.explanations import ExplanationWidget
from napari_xaimed.viewer.widgets.longitudinal import IDENTITY, LongitudinalWidget
from napari_xaimed.viewer.widgets.registration import RegistrationWidget
from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

RNG = np.random.default_rng(3)
VOLUME = RNG.random((16, 24, 24)).astype(np.float32)
LABELS = np.zeros((16, 24, 24), np.int32)
LABELS[4:10, 4:12, 4:12] = 1
LABELS[6:12, 14:20, 14:20] = 2


def not_a_model(tmp: Path) -> str:
    path = tmp / "model.pt"
    path.write_text("not a model")
    return str(path)


class TwoChannels(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


def two_channel_file(tmp: Path) -> str:
    path = tmp / "two_channels.pt"
    torch.jit.save(torch.jit.script(TwoChannels()), str(path))
    return str(path)


class TwoClasses(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


def two_class_file(tmp: Path) -> str:
    """A classifier whose classes the form does not know before a run (the bundled model's
    are: its target list holds 0 and 1 only)."""
    path = tmp / "two_classes.pt"
    torch.jit.save(torch.jit.script(TwoClasses()), str(path))
    return str(path)


class OutOfMemory(torch.nn.Module):
    """Every forward pass fails as a full GPU does (simulated on the CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


# Each setup adds the input layers, builds the widget and sets it up; returns the widget.

def seg_image(data: np.ndarray) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_image(data, name="ct")
        widget = SegmentationWidget(viewer)
        widget.image.value = viewer.layers["ct"]
        widget.method.value = "otsu"
        return widget
    return setup


def seg_model_file(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
    widget = seg_image(VOLUME)(viewer, tmp, monkeypatch)
    widget.method.value = "model"
    widget.model_source.value = "file"
    widget.model_file.value = not_a_model(tmp)
    return widget


def evaluation(reference: np.ndarray, prediction: np.ndarray,
               prediction_scale: tuple[float, ...] = (1.0, 1.0, 1.0)
               ) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_labels(reference, name="reference")
        viewer.add_labels(prediction, name="prediction", scale=prediction_scale)
        widget = EvaluationWidget(viewer)
        widget.reference.value = viewer.layers["reference"]
        widget.prediction.value = viewer.layers["prediction"]
        return widget
    return setup


def registration(fixed: np.ndarray, moving: np.ndarray) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_image(fixed, name="fixed")
        viewer.add_image(moving, name="moving")
        widget = RegistrationWidget(viewer)
        widget.fixed.value = viewer.layers["fixed"]
        widget.moving.value = viewer.layers["moving"]
        widget.transform.value = "Rigid"
        return widget
    return setup


def attribution(model_file: Callable[[Path], str] | None = None, target: str | None = None,
                region_scale: tuple[float, ...] | None = None, out_of_memory: bool = False
                ) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_image(VOLUME, name="ct")
        widget = AttributionWidget(viewer)
        widget.image.value = viewer.layers["ct"]
        widget.methods.value = ["saliency"]
        widget.device.value = "cpu"
        if model_file is not None:
            widget.model_source.value = "file"
            widget.model_file.value = model_file(tmp)
        if target is not None:
            widget.target.value = target
        if region_scale is not None:
            viewer.add_labels(LABELS, name="region", scale=region_scale)
            widget.region.value = viewer.layers["region"]
        if out_of_memory:
            monkeypatch.setattr(AttributionWidget, "_model",
                                lambda self, source, *_: load_model(OutOfMemory()))
        return widget
    return setup


def explanation(check: str, mask: np.ndarray, mask_scale: tuple[float, ...] = (1.0, 1.0, 1.0)
                ) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_image(VOLUME, name="ct")
        viewer.add_image(VOLUME, name="heatmap", colormap="inferno")
        viewer.add_labels(mask, name="truth", scale=mask_scale)
        widget = ExplanationWidget(viewer)
        widget.check.value = check
        widget.image.value = viewer.layers["ct"]
        widget.heatmap.value = viewer.layers["heatmap"]
        widget.mask.value = viewer.layers["truth"]
        widget.device.value = "cpu"
        return widget
    return setup


def moved(layer_name: str, scale: tuple[float, ...]) -> Callable[[Any, Path, Any], Any]:
    """Deletion curves with the heatmap at another voxel size than the image."""
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        widget = explanation("deletion / insertion", LABELS)(viewer, tmp, monkeypatch)
        viewer.layers[layer_name].scale = scale
        return widget
    return setup


def translated(setup: Callable[[Any, Path, Any], Any]) -> Callable[[Any, Path, Any], Any]:
    """The truth mask moved by 5 mm: same shape and scale, another translate."""
    def moved_setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        widget = setup(viewer, tmp, monkeypatch)
        viewer.layers["truth"].translate = (5.0, 0.0, 0.0)
        return widget
    return moved_setup


def longitudinal(prior: np.ndarray, current: np.ndarray, *, same: bool = False,
                 iterations: str = "", alignment: str = IDENTITY
                 ) -> Callable[[Any, Path, Any], Any]:
    def setup(viewer: Any, tmp: Path, monkeypatch: Any) -> Any:
        viewer.add_image(prior, name="prior")
        viewer.add_image(current, name="current")
        widget = LongitudinalWidget(viewer)
        widget.prior.value = viewer.layers["prior"]
        widget.current.value = viewer.layers["prior" if same else "current"]
        widget.alignment.value = alignment
        widget.iterations.value = iterations
        widget.device.value = "cpu"
        return widget
    return setup


CONSTANT = np.full(VOLUME.shape, 0.5, np.float32)
WITH_NAN = np.where(VOLUME > 0.95, np.nan, VOLUME).astype(np.float32)

#: (widget, bad input, setup, key words of the notification)
CASES = [
    ("segmentation", "4D image", seg_image(VOLUME[None]), ("3D", "data[0]")),
    ("segmentation", "NaN in image", seg_image(WITH_NAN), ("NaN", "nan_to_num")),
    ("segmentation", "constant image", seg_image(CONSTANT), ("constant", "right layer")),
    ("segmentation", "model file that is not a model", seg_model_file,
     ("neither TorchScript", "torch.jit.save")),
    ("evaluation", "same shape, other voxel size", evaluation(LABELS, LABELS, (2.0, 1.0, 1.0)),
     ("do not overlay", "scale and translate")),
    ("evaluation", "shapes differ", evaluation(LABELS, LABELS[:, :12]),
     ("differ in shape", "resample")),
    ("evaluation", "negative labels", evaluation(LABELS, -LABELS), ("negative", ">= 0")),
    ("registration", "2D moving image", registration(VOLUME, VOLUME[0]), ("3D", "np.newaxis")),
    ("registration", "constant moving image", registration(VOLUME, CONSTANT),
     ("constant", "nothing to align")),
    ("registration", "NaN in the fixed image", registration(WITH_NAN, VOLUME),
     ("fixed", "nan_to_num")),
    ("attribution", "model file that is not a model", attribution(model_file=not_a_model),
     ("neither TorchScript", "torch.jit.save")),
    ("attribution", "model input channels do not fit", attribution(model_file=two_channel_file),
     ("does not accept", "channels")),
    ("attribution", "target class out of range",
     attribution(model_file=two_class_file, target="7"),
     ("target class 7", "2 classes")),
    ("attribution", "GPU out of memory", attribution(out_of_memory=True),
     ("out of memory on cpu", "one volume per pass")),
    ("attribution", "region at another voxel size", attribution(region_scale=(3.0, 1.0, 1.0)),
     ("do not overlay", "resample")),
    ("explanations", "empty truth mask", explanation("against mask", np.zeros_like(LABELS)),
     ("mask is empty",)),
    ("explanations", "truth mask at another position",
     translated(explanation("against mask", LABELS)),
     ("do not overlay", "translate")),
    ("explanations", "heatmap at another voxel size", moved("heatmap", (1.0, 2.0, 2.0)),
     ("do not overlay", "heatmap")),
    ("longitudinal", "same layer twice", longitudinal(VOLUME, VOLUME, same=True),
     ("same layer", "two scans")),
    ("longitudinal", "2D prior", longitudinal(VOLUME[0], VOLUME, alignment="SyN"),
     ("prior scan", "np.newaxis")),
    ("longitudinal", "NaN in the current scan", longitudinal(VOLUME, WITH_NAN),
     ("current scan", "nan_to_num")),
    ("longitudinal", "iterations that are not numbers",
     longitudinal(VOLUME, VOLUME, alignment="SyN", iterations="many"),
     ("iterations", "40, 20, 0")),
]

def snapshot(viewer: Any) -> dict[str, tuple]:
    return {layer.name: (np.array(layer.data, copy=True), tuple(layer.scale),
                         tuple(layer.translate)) for layer in viewer.layers}


@pytest.mark.parametrize(("kind", "case", "setup", "words"), CASES,
                         ids=[f"{k}: {c}" for k, c, _, _ in CASES])
def test_bad_input_is_a_notification_and_changes_nothing(qtbot, make_napari_viewer, tmp_path,
                                                         monkeypatch, kind, case, setup, words):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    widget = setup(viewer, tmp_path, monkeypatch)
    qtbot.addWidget(widget)
    before = snapshot(viewer)
    outcomes: list[str] = []
    widget.job.finished.connect(outcomes.append)
    widget.job.run_button.click()
    # a check of the form fails at once; one in the worker ends the job as "failed"
    qtbot.waitUntil(lambda: bool(shown) and not widget.job.running, timeout=60000)
    assert outcomes in ([], ["failed"])
    assert len(shown) == 1
    for word in words:
        assert word in shown[0], (case, shown[0])
    # napari keeps going: the same widget is ready for the next run
    assert widget.job.run_button.isEnabled() and not widget.job.cancel_button.isEnabled()
    after = snapshot(viewer)
    assert list(after) == list(before)  # no half-made output layer
    for name, (data, scale, translate) in before.items():
        np.testing.assert_array_equal(after[name][0], data, err_msg=name)
        assert after[name][1:] == (scale, translate), name


def test_huge_label_ids_evaluate_in_the_viewer(qtbot, make_napari_viewer, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    viewer = make_napari_viewer()
    huge = LABELS.astype(np.int64) * 2**40
    widget = evaluation(huge, huge.copy())(viewer, Path("."), monkeypatch)
    qtbot.addWidget(widget)
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done" and not shown
    # two label values, each its own class (they were merged into one class silently before)
    summaries = widget.viewer.layers["Errors [prediction]"].metadata["xaimed"]["summary"]
    assert [s["class"] for s in summaries] == [str(2**40), str(2**41)]
    for summary in summaries:
        assert (summary["tp"], summary["fp"], summary["fn"], summary["pq"]) == (1, 0, 0, 1.0)
    mean = widget.summary.rows[-1]
    assert (mean["class"], mean["tp"], mean["fp"], mean["fn"], mean["pq"]) == (
        "mean over classes", 2, 0, 0, 1.0)
    np.testing.assert_array_equal(viewer.layers["reference"].data, huge)


def test_a_cancelled_run_is_not_an_error_and_adds_nothing(qtbot, make_napari_viewer,
                                                          monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)

    def slow(volume: np.ndarray, method: str, **params: Any):
        for i in range(200):
            time.sleep(0.02)
            yield Progress(i + 1, 200, "working")
        return None

    monkeypatch.setattr("napari_xaimed.viewer.widgets.segmentation.segment_steps", slow)
    viewer = make_napari_viewer()
    widget = seg_image(VOLUME)(viewer, Path("."), monkeypatch)
    qtbot.addWidget(widget)
    before = snapshot(viewer)
    with qtbot.waitSignal(widget.job.finished, timeout=10000) as blocker:
        widget.job.run_button.click()
        qtbot.wait(100)
        widget.job.cancel_button.click()
    assert blocker.args[0] == "cancelled" and not shown
    assert "Cancelled" in widget.job.status.text()
    assert list(snapshot(viewer)) == list(before)
    np.testing.assert_array_equal(viewer.layers["ct"].data, VOLUME)
