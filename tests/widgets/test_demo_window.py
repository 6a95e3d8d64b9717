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
