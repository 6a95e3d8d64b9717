"""The attribution widget: one heatmap layer per method over the image, errors as notices."""

import numpy as np
import pytest

from napari_xaimed.viewer.heatmaps import DIVERGING, SEQUENTIAL
from napari_xaimed.viewer.widgets.attribution import AttributionWidget


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
    assert ig.colormap.name == DIVERGING and low == pytest.approx(-high)  # signed: symmetric
    assert cam.colormap.name == SEQUENTIAL and cam.contrast_limits[0] == 0  # unsigned
    prov = ig.metadata["xaimed"]
    assert prov["kind"] == "attribution" and prov["params"]["method"] == "integrated_gradients"
    assert prov["params"]["steps"] == 8 and len(prov["model"]["sha256"]) == 64
    np.testing.assert_array_equal(viewer.layers["lesion ct"].data, source)
    # the dock says what the heatmaps explain: the predicted class, its name and probability
    scores = np.asarray(prov["scores"], float)
    predicted = int(scores.argmax())
    probability = np.exp(scores - scores.max())[predicted] / np.exp(scores - scores.max()).sum()
    name = prov["model"]["classes"][predicted]
    assert widget.explained.value == (
        f"lesion ct: explained class {predicted} ({name}), score {scores[predicted]:.4g}, "
        f"probability {probability:.2f}; predicted {predicted} ({name})")
    assert prov["params"]["target_index"] == predicted

    n_layers = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "done"  # a re-run updates, no copies
    assert len(viewer.layers) == n_layers


CAM_TITLES = {"gradcam_pp": "Grad-CAM++", "xgradcam": "XGrad-CAM", "hirescam": "HiResCAM",
              "layercam": "LayerCAM", "scorecam": "Score-CAM", "ablationcam": "Ablation-CAM",
              "eigencam": "Eigen-CAM"}


def test_the_cam_family_is_in_the_method_list_and_each_becomes_a_heatmap(qtbot,
                                                                         viewer_with_lesion):
    """Every CAM variant is offered, named as its paper names it, and gives the map
    ``attribute`` gives, with the passes it cost in the layer's provenance."""
    from napari_xaimed.attribution import attribute
    from napari_xaimed.cli.rerun import recompute

    viewer = viewer_with_lesion
    widget = AttributionWidget(viewer)
    assert set(CAM_TITLES) <= set(widget.methods.choices)
    widget.image.value = viewer.layers["lesion ct"]
    widget.methods.value = list(CAM_TITLES)
    widget.device.value = "cpu"
    assert run_and_wait(qtbot, widget) == "done"
    for method, name in CAM_TITLES.items():
        layer = viewer.layers[f"{name} [lesion ct]"]
        assert layer.colormap.name == SEQUENTIAL and layer.data.shape == (
            viewer.layers["lesion ct"].data.shape)
        params = layer.metadata["xaimed"]["params"]
        assert params["method"] == method and params["passes"]["forward"] >= 1
    score = viewer.layers["Score-CAM [lesion ct]"]
    direct = attribute("bundled", viewer.layers["lesion ct"].data, "scorecam", device="cpu")
    np.testing.assert_allclose(score.data, direct.map, rtol=1e-5, atol=1e-7)
    # 1 + 32 channels of the bundled model's last convolution
    assert score.metadata["xaimed"]["params"]["passes"]["forward"] == 33
    np.testing.assert_allclose(recompute(score.metadata["xaimed"]), score.data, rtol=1e-6)


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


def test_explained_text_for_a_segmentation_region_and_a_chosen_class():
    from napari_xaimed.attribution.run import Attribution
    from napari_xaimed.viewer.widgets.attribution import explained

    seg = Attribution(map=np.zeros((2, 2, 2), np.float32), method="saliency", signed=False,
                      target=1, params={"region": "given mask", "channel": 1,
                                        "target": "predicted"},
                      scores=[12.5], model={"classes": ["background", "liver"]})
    assert explained(seg) == ("explained channel 1 (liver) inside the given region, "
                              "summed logit 12.5")
    chosen = Attribution(map=np.zeros((2, 2, 2), np.float32), method="saliency", signed=False,
                         target=0, params={"target": "given"}, scores=[0.0, 0.0], model={})
    assert explained(chosen) == "explained class 0, score 0, probability 0.50; predicted 0"


def test_attention_rollout_of_a_transformer_file_is_a_heatmap(qtbot, viewer_with_lesion,
                                                              tmp_path):
    """A ViT from a state dict with its JSON config (input resized to 32^3): the attention
    methods are in the method list, and block and head reach them."""
    import json

    import torch
    from monai.networks.nets import ViT

    args = dict(in_channels=1, img_size=32, patch_size=8, hidden_size=48, mlp_dim=96,
                num_layers=2, num_heads=4, classification=True, num_classes=2)
    torch.manual_seed(0)
    weights = tmp_path / "vit.pt"
    torch.save(ViT(**args).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(
        {"network": "ViT", "args": args, "preprocessing": {"input_size": [32, 32, 32]}}))
    viewer = viewer_with_lesion
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    widget.model_source.value = "file"
    widget.model_file.value = weights
    widget.methods.value = ["attention_rollout", "attention_gradcam"]
    widget.block.value, widget.head.value = 0, "1"
    assert run_and_wait(qtbot, widget) == "done"
    rollout = viewer.layers["Attention Rollout [lesion ct]"]
    assert "Attention Grad-CAM [lesion ct]" in viewer.layers
    assert rollout.data.shape == viewer.layers["lesion ct"].data.shape
    np.testing.assert_allclose(rollout.scale, (2.0, 1.0, 1.0))
    params = rollout.metadata["xaimed"]["params"]
    assert params["block"] == 0 and params["head"] == 1 and params["patch_grid"] == [4, 4, 4]
    # the provenance is enough to compute the same map again (napari-xaimed rerun)
    from napari_xaimed.cli.rerun import recompute

    np.testing.assert_array_equal(recompute(rollout.metadata["xaimed"]), rollout.data)


def test_a_lazy_layer_is_explained_slab_by_slab_as_attribute_lazy(qtbot, viewer_with_lesion):
    """A dask-backed image (a Zarr larger than memory): the heatmap is a dask layer, equal to
    attribute_lazy's map and close to the in-memory map; a region for this classifier is
    refused, as attribute refuses it."""
    import dask.array as da

    from napari_xaimed.attribution import attribute
    from napari_xaimed.attribution.lazy import attribute_lazy

    viewer = viewer_with_lesion
    source = np.asarray(viewer.layers["lesion ct"].data)
    viewer.add_image(da.from_array(source, chunks=(8, -1, -1)), name="lazy ct",
                     scale=(2.0, 1.0, 1.0))
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lazy ct"]
    widget.methods.value = ["saliency"]
    assert run_and_wait(qtbot, widget) == "done", widget.job.status.text()
    layer = viewer.layers["Saliency [lazy ct]"]
    assert isinstance(layer.data, da.Array)
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 1.0))
    expected = attribute_lazy("bundled", da.from_array(source, chunks=(8, -1, -1)),
                              "saliency", device="cpu").map
    np.testing.assert_allclose(np.asarray(layer.data), np.asarray(expected), rtol=1e-5,
                               atol=1e-8)
    in_memory = attribute("bundled", source, "saliency", device="cpu").map
    np.testing.assert_allclose(np.asarray(layer.data), in_memory, rtol=1e-3,
                               atol=1e-4 * np.abs(in_memory).max())

    viewer.add_labels((source > source.mean()).astype(np.uint8), name="region",
                      scale=(2.0, 1.0, 1.0))
    widget.reset_choices()
    widget.region.value = viewer.layers["region"]
    count = len(viewer.layers)
    assert run_and_wait(qtbot, widget) == "failed"
    assert "region is a segmentation target" in widget.job.status.text()
    assert len(viewer.layers) == count


def test_the_form_offers_what_applies_and_clears_stale_lines(qtbot, viewer_with_lesion):
    """The bundled CNN: its two classes as targets, no attention methods; each method's own
    fields only; the occlusion window said to be in model voxels; a run's status lines cleared
    when an input changes; methods side by side, the last one shown."""
    from napari_xaimed.attribution import ATTENTION_METHODS, load_model

    viewer = viewer_with_lesion
    widget = AttributionWidget(viewer)
    widget.image.value = viewer.layers["lesion ct"]
    classes = load_model("bundled").classes  # the model's own record of its classes
    labels = [widget.target.native.itemText(i) for i in range(widget.target.native.count())]
    assert labels == ["predicted class", *(f"{i} ({c})" for i, c in enumerate(classes))]
    assert not set(ATTENTION_METHODS) & set(widget.methods.choices)
    fields = ("steps", "samples", "noise", "window", "stride", "block", "head")

    def shown() -> set[str]:
        return {f for f in fields if not getattr(widget, f).native.isHidden()}

    for methods, expected in ((["integrated_gradients"], {"steps"}),
                              (["smoothgrad", "saliency"], {"samples", "noise"}),
                              (["occlusion"], {"window", "stride"}), (["gradcam"], set())):
        widget.methods.value = methods
        assert shown() == expected, methods
    assert "model voxels" in widget.window.label and "model voxels" in widget.stride.label
    assert "the model sees 32 x 32 x 32 voxels" in widget.info.value

    widget.model_source.value = "file"  # not known until loaded: attention may apply
    assert set(ATTENTION_METHODS) <= set(widget.methods.choices)
    widget.methods.value = ["attention_rollout"]
    assert shown() == {"block", "head"}
    widget.model_source.value = "bundled"

    widget.methods.value = ["saliency", "gradcam"]
    widget.device.value = "cpu"
    assert run_and_wait(qtbot, widget) == "done"
    saliency, cam = viewer.layers["Saliency [lesion ct]"], viewer.layers["Grad-CAM [lesion ct]"]
    assert cam.visible and not saliency.visible  # both kept, the newest shown
    assert widget.explained.value and widget.job.status.text()
    widget.target.value = "1"
    assert widget.explained.value == "" and widget.job.status.text() == ""
