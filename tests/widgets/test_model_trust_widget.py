"""A model file that names code: the widget shows exactly what would run and asks; No leaves
everything as it was, Yes loads the file with trust=True (and is remembered for the file until
its config changes)."""

from __future__ import annotations

import json

import numpy as np
import torch
from monai.networks.nets import UNet

from napari_xaimed._core.errors import UntrustedModelError
from napari_xaimed.viewer.widgets import _trust
from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
        "strides": [2], "num_res_units": 0}


def _model_file(tmp_path):
    torch.manual_seed(6)
    weights = tmp_path / "unet.pt"
    torch.save(UNet(**UNET).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "monai.networks.nets.unet:UNet", "args": UNET}))
    return weights


def _widget(viewer, weights):
    widget = SegmentationWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.method.value = "model"
    widget.model_source.value = "file"
    widget.model_file.value = weights
    widget.roi_size.value = 32
    return widget


def _click(qtbot, widget) -> str:
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        widget.job.run_button.click()
    return blocker.args[0]


def test_the_dialog_lists_each_callable_and_defaults_to_no(qtbot):
    from qtpy.QtWidgets import QMessageBox

    error = UntrustedModelError("/data/net.json", ["callable 'subprocess:run' (its config's "
                                                   "'network')", "expression '$import os' "
                                                   "(at imports#0)"])
    text = _trust.trust_question(error)
    assert "/data/net.json" in text
    assert "callable 'subprocess:run'" in text and "expression '$import os'" in text
    box = _trust.trust_dialog(None, text)
    qtbot.addWidget(box)
    assert box.text() == text and box.windowTitle() == _trust.TITLE
    buttons = box.standardButtons()
    assert buttons & QMessageBox.StandardButton.Yes and buttons & QMessageBox.StandardButton.No
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)


def test_no_leaves_everything_and_yes_loads_the_file_trusted(qtbot, viewer_with_lesion,
                                                             tmp_path, monkeypatch):
    from napari_xaimed.attribution import load_model
    from napari_xaimed.segmentation import segment_with_model

    weights = _model_file(tmp_path)
    viewer = viewer_with_lesion
    widget = _widget(viewer, weights)
    qtbot.addWidget(widget)
    asked: list[str] = []
    answers = [False]
    monkeypatch.setattr(_trust, "confirm",
                        lambda parent, text: asked.append(text) or answers.pop(0))
    shown: list[str] = []
    monkeypatch.setattr("napari.utils.notifications.show_error", shown.append)
    layers = [layer.name for layer in viewer.layers]

    # No: asked once, with the callable, and nothing changes
    assert _click(qtbot, widget) == "untrusted"
    assert len(asked) == 1
    assert "'monai.networks.nets.unet:UNet'" in asked[0]
    assert str(weights.with_suffix(".json")) in asked[0]
    assert [layer.name for layer in viewer.layers] == layers and not shown
    assert "not trusted" in widget.job.status.text() and not widget.job.running

    # Yes: the job runs again with the file trusted
    answers.append(True)
    assert _click(qtbot, widget) == "untrusted"
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        pass
    assert blocker.args[0] == "done", widget.job.status.text()
    assert len(asked) == 2
    labels = viewer.layers["Model segmentation [lesion ct]"]
    ct = viewer.layers["lesion ct"]
    expected = segment_with_model(ct.data, load_model(weights, trust=True),
                                  spacing=tuple(ct.scale), roi_size=32)
    np.testing.assert_array_equal(labels.data, expected.labels)
    assert labels.metadata["xaimed"]["facts"]["model"]["trusted"] is True

    # remembered for the file as it is; asked again once its config changed
    assert _click(qtbot, widget) == "done" and len(asked) == 2
    config = json.loads(weights.with_suffix(".json").read_text())
    weights.with_suffix(".json").write_text(json.dumps({**config, "classes": ["bg", "fg"]}))
    answers.append(False)
    assert _click(qtbot, widget) == "untrusted" and len(asked) == 3


def test_yes_trusts_the_config_the_dialog_showed_not_one_edited_meanwhile(
        qtbot, viewer_with_lesion, tmp_path, monkeypatch):
    """The config is edited while the dialog is open (or between the dialog and the load):
    Yes lets the listed code run, not the new code, which is refused and asked about again;
    the new code's marker is never written and no layer is added."""
    weights = _model_file(tmp_path)
    viewer = viewer_with_lesion
    widget = _widget(viewer, weights)
    qtbot.addWidget(widget)
    marker = tmp_path / "ran"
    asked: list[str] = []

    def answer(parent, text):
        asked.append(text)
        if len(asked) == 1:  # the file changes while the user reads the first dialog
            weights.with_suffix(".json").write_text(json.dumps(
                {"network": "subprocess:run", "args": {"args": ["touch", str(marker)]}}))
            return True
        return False

    monkeypatch.setattr(_trust, "confirm", answer)
    monkeypatch.setattr("napari.utils.notifications.show_error", lambda *a: None)
    layers = [layer.name for layer in viewer.layers]
    assert _click(qtbot, widget) == "untrusted"
    with qtbot.waitSignal(widget.job.finished, timeout=60000) as blocker:
        pass  # the retry after Yes: refused again, since the config is not the one shown
    assert blocker.args[0] == "untrusted", widget.job.status.text()
    assert len(asked) == 2 and "'subprocess:run'" in asked[1]
    assert not marker.exists()
    assert [layer.name for layer in viewer.layers] == layers
