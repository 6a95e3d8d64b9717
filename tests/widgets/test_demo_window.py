"""`napari-xaimed demo` with a window: samples loaded, results added, the four widgets docked."""

from napari_xaimed.cli.main import main


def test_demo_window_screenshot(tmp_path, qapp):
    from PIL import Image

    shot = tmp_path / "demo.png"
    assert main(["demo", "--screenshot", str(shot)]) == 0
    with Image.open(shot) as img:
        width, height = img.size
        colours = len(img.convert("RGB").getcolors(maxcolors=1_000_000) or [])
    assert width > 800 and height > 500
    assert colours > 50  # a rendered canvas and widgets, not a blank window


def test_demo_window_shows_only_the_newest_heatmap_with_its_colour_bar(make_napari_viewer):
    from napari_xaimed.cli.demo import demo_layers, show_layers

    viewer = make_napari_viewer()
    layers, _ = demo_layers()
    show_layers(viewer, layers)
    gradients = viewer.layers["Integrated Gradients [lesion ct]"]
    gradcam = viewer.layers["Grad-CAM [lesion ct]"]
    assert gradcam.visible and not gradients.visible  # not stacked over the CT
    assert gradcam.colorbar.visible and gradients.colorbar.visible
    titles = [o.text for k, o in viewer.canvas.overlays.items()
              if "heatmap title" in k and o.visible]
    assert len(titles) == 1 and titles[0].startswith("Grad-CAM [lesion ct]")
    assert [layer.name for layer in viewer.layers] == [layer[1]["name"] for layer in layers]


def test_the_demo_names_its_segmentation_as_the_widget_does(qtbot, make_napari_viewer):
    """Segment in the demo window (Otsu on the lesion volume) replaces the demo's result instead
    of adding a second, differently named layer beside it."""
    from napari_xaimed.cli.demo import DEMO_SEGMENTATION, demo_layers, show_layers
    from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

    viewer = make_napari_viewer()
    layers, _ = demo_layers()
    show_layers(viewer, layers)
    assert "Otsu segmentation [lesion ct]" in viewer.layers
    n_layers = len(viewer.layers)
    widget = SegmentationWidget(viewer)
    qtbot.addWidget(widget)
    widget.image.value = viewer.layers["lesion ct"]
    widget.classes.value = DEMO_SEGMENTATION["classes"]
    widget.smoothing.value = DEMO_SEGMENTATION["smoothing_mm"]
    widget.min_size.value = DEMO_SEGMENTATION["min_size_mm3"]
    with qtbot.waitSignal(widget.job.finished, timeout=120000) as blocker:
        widget.job.run_button.click()
    assert blocker.args[0] == "done"
    assert len(viewer.layers) == n_layers
    assert [layer.name for layer in viewer.layers if "segmentation" in layer.name.lower()] == [
        "Otsu segmentation [lesion ct]"]
