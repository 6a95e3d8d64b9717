"""Make the README screenshots: one per dock widget, each with real results from the sample data.

Run headless with ``xvfb-run -a python scripts/make_screenshots.py`` (napari needs an X server
with OpenGL; Qt's offscreen platform has none). For every widget the script opens a napari
viewer with the matching sample, docks the widget the way a user would (Plugins menu), sets its
fields, clicks its Run button, waits for the worker to finish, arranges the view (a slice
through the results, the output layers on top, the results table or plot in the dock) and saves
the whole window to ``docs/screenshots/<widget>.png``.

Options: ``--only NAME [NAME ...]`` to remake some of them, ``--out FOLDER``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
try:
    import napari_xaimed  # noqa: F401
except ImportError:  # run from a checkout that is not installed: use its sources
    sys.path.insert(0, str(ROOT / "src"))
    # ANTs runs in spawned processes, which must find the sources too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
from napari_xaimed.evaluation.overlap import mask_dice  # noqa: E402 - after the sources are on the path

WINDOW = (1400, 900)
DOCK_WIDTH = 560
PLUGIN = "napari-xaimed"


# --------------------------------------------------------------------------------------------
# helpers


def process_events(seconds: float = 0.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while True:
        QApplication.processEvents()
        if time.perf_counter() >= end:
            return
        time.sleep(0.02)


def open_viewer(sample: str, title: str) -> Any:
    import napari

    viewer = napari.Viewer(title=f"napari-xaimed: {title}")
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample(PLUGIN, sample)
    process_events(0.2)
    return viewer


def dock(viewer: Any, name: str, tabify: bool = False) -> tuple[Any, Any]:
    """Dock a widget from the plugin's manifest, as the Plugins menu does, and widen the dock."""
    from qtpy.QtCore import Qt

    dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=tabify)
    viewer.window._qt_window.resizeDocks([dock_widget], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    process_events(0.1)
    return dock_widget, widget


def run_job(panel: Any, timeout: float = 600.0) -> float:
    """Click the panel's Run button and wait until the job ends; fail unless it is done."""
    outcome: list[str] = []
    panel.finished.connect(outcome.append)
    started = time.perf_counter()
    panel.run_button.click()
    while not outcome:
        process_events(0.05)
        if time.perf_counter() - started > timeout:
            panel.cancel()
            raise TimeoutError(f"job did not finish in {timeout:.0f} s: {panel.status.text()}")
    panel.finished.disconnect(outcome.append)
    if outcome[0] != "done":
        raise RuntimeError(f"job {outcome[0]}: {panel.status.text()}")
    process_events(0.1)
    return time.perf_counter() - started


def best_slice(mask: np.ndarray, score: Callable[[np.ndarray], float] | None = None) -> int:
    """The z index whose slice scores highest (default: the most mask voxels)."""
    score = score or (lambda s: float(np.count_nonzero(s)))
    return int(np.argmax([score(mask[z]) for z in range(mask.shape[0])]))


def go_to_slice(viewer: Any, layer: Any, z: int) -> None:
    """Show voxel slice ``z`` of ``layer`` (world mm from its scale and translate)."""
    viewer.dims.set_point(0, float(layer.translate[0] + z * layer.scale[0]))


def camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def outline(layer: Any, colour: str = "yellow", width: int = 1) -> None:
    """Draw a Labels layer as contours of one colour, so what lies under it stays visible."""
    from napari.utils.colormaps import DirectLabelColormap

    layer.colormap = DirectLabelColormap(color_dict={None: colour, 0: "transparent"})
    layer.contour = width
    layer.opacity = 1.0


def show_truth(viewer: Any) -> None:
    """The lesion truth outlined on top of every layer, on the slice that shows most of it."""
    truth = viewer.layers["lesion truth"]
    viewer.layers.move(viewer.layers.index(truth), len(viewer.layers))
    outline(truth)
    go_to_slice(viewer, truth, best_slice(truth.data))


def save(viewer: Any, path: Path) -> None:
    """Save the whole window (canvas, layer list, docks) as a palette PNG."""
    from PIL import Image

    angles = camera(viewer).angles
    viewer.reset_view()
    camera(viewer).angles = angles
    process_events(0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(np.asarray(shot)[..., :3])
    colours = len(image.getcolors(maxcolors=1_000_000) or [])
    if colours < 200:  # a rendered canvas, tables and plots have thousands
        raise RuntimeError(f"{path.name}: only {colours} colours, the window was not rendered")
    # 256 colours keep the window crisp and the file small (a full-colour PNG is ~1 MB)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
          f"{image.size[0]}x{image.size[1]}, {path.stat().st_size // 1024} KB", flush=True)


# --------------------------------------------------------------------------------------------
# one function per widget; each returns the viewer, arranged for its screenshot


def segmentation() -> Any:
    viewer = open_viewer("lesion", "segmentation")
    _, widget = dock(viewer, "Segmentation")
    widget.image.value = viewer.layers["lesion ct"]
    widget.method.value = "otsu"
    widget.classes.value = 4
    widget.smoothing.value = 1.0
    widget.min_size.value = 20.0
    seconds = run_job(widget.job)
    out = viewer.layers["Otsu segmentation [lesion ct]"]
    n_found = len(np.unique(out.data)) - 1
    overlap = mask_dice(out.data, viewer.layers["lesion truth"].data)
    print(f"  segmentation: {n_found} lesions found, Dice {overlap:.3f} ({seconds:.1f} s)")
    show_truth(viewer)
    viewer.layers.selection.active = out
    return viewer


def evaluation() -> Any:
    viewer = open_viewer("panoptic", "evaluation")
    _, widget = dock(viewer, "Panoptic evaluation")
    widget.reference.value = viewer.layers["reference"]
    widget.prediction.value = viewer.layers["prediction"]
    widget.instance_input.value = True
    widget.matching.value = "many_to_one"
    widget.threshold.value = 0.3
    seconds = run_job(widget.job)
    (summary,) = widget.summary.rows
    print(f"  evaluation: TP {summary['tp']} FP {summary['fp']} FN {summary['fn']}, "
          f"PQ {summary['pq']:.3f} ({seconds:.1f} s)")
    errors = viewer.layers["Errors [prediction]"]
    for name in ("reference", "prediction"):
        viewer.layers[name].visible = False
    errors.opacity = 1.0
    # the objects lie at different depths, so no one slice shows every kind of error: 3D
    viewer.dims.ndisplay = 3
    camera(viewer).angles = (0.0, 35.0, 60.0)
    widget.tabs.setCurrentWidget(widget.instances)
    viewer.layers.selection.active = errors
    return viewer


def registration() -> Any:
    viewer = open_viewer("longitudinal", "registration")
    # the form, the quality table and the carry-along section need more height than 900
    viewer.window._qt_window.resize(WINDOW[0], 1040)
    _, widget = dock(viewer, "Registration")
    widget.fixed.value = viewer.layers["current"]
    widget.moving.value = viewer.layers["prior"]
    widget.transform.value = "Affine"
    widget.fixed_labels.value = viewer.layers["current organs"]
    widget.moving_labels.value = viewer.layers["prior organs"]
    seconds = run_job(widget.job)
    rows = {r["figure"]: r for r in widget.quality.rows}
    print(f"  registration: NCC {rows['NCC']['before']:.3f} -> {rows['NCC']['after']:.3f} "
          f"({seconds:.1f} s)")
    names = {what: f"{what} [prior->current]" for what in
             ("Warped", "Jacobian", "Folded", "Warped grid", "Displacement")}
    # the current scan in green and the warped prior in magenta: grey where they agree
    current = viewer.layers["current"]
    current.colormap = "green"
    warped = viewer.layers[names["Warped"]]
    warped.colormap, warped.blending = "magenta", "additive"
    viewer.layers["current organs"].visible = False
    viewer.layers[names["Jacobian"]].visible = False
    viewer.layers[names["Folded"]].visible = False
    viewer.layers[names["Warped grid"]].visible = False
    viewer.layers[names["Displacement"]].edge_width = 0.8  # thicker, for a small picture
    organs = viewer.layers["current organs"].data
    z = best_slice(organs, lambda s: len(np.unique(s)) * 1e6 + np.count_nonzero(s))
    # vectors are drawn on the slices they start on (every "vector every" voxels): the nearest
    starts = np.unique(np.round(viewer.layers[names["Displacement"]].data[:, 0, 0]).astype(int))
    go_to_slice(viewer, current, int(starts[np.argmin(np.abs(starts - z))]))
    viewer.layers.selection.active = warped
    return viewer


def attribution() -> Any:
    viewer = open_viewer("lesion", "attribution")
    _, widget = dock(viewer, "Attribution")
    widget.image.value = viewer.layers["lesion ct"]
    widget.methods.value = ["integrated_gradients", "gradcam"]
    widget.steps.value = 16
    seconds = run_job(widget.job)
    cam = viewer.layers["Grad-CAM [lesion ct]"]
    ig = viewer.layers["Integrated Gradients [lesion ct]"]
    prov = cam.metadata["xaimed"]
    print(f"  attribution: target class {prov['params']['target_index']} ({seconds:.1f} s)")
    ig.visible = False  # one heatmap at a time over the image; IG is a click away
    show_truth(viewer)
    viewer.layers.selection.active = cam
    return viewer


def explanations() -> Any:
    viewer = open_viewer("lesion", "explanation check")
    _, attrib = dock(viewer, "Attribution")
    attrib.image.value = viewer.layers["lesion ct"]
    attrib.methods.value = ["gradcam"]
    run_job(attrib.job)
    dock_widget, widget = dock(viewer, "Explanation check", tabify=True)
    widget.check.value = "deletion / insertion"
    widget.image.value = viewer.layers["lesion ct"]
    widget.heatmap.value = viewer.layers["Grad-CAM [lesion ct]"]
    widget.target.value = "1"
    widget.steps.value = 10
    seconds = run_job(widget.job)
    (row,) = widget.table.rows
    print(f"  explanation check: deletion area {row['deletion area']:.3f}, insertion area "
          f"{row['insertion area']:.3f} ({seconds:.1f} s)")
    dock_widget.raise_()
    show_truth(viewer)
    viewer.layers.selection.active = viewer.layers["Grad-CAM [lesion ct]"]
    return viewer


SHOTS: dict[str, Callable[[], Any]] = {
    "segmentation": segmentation,
    "evaluation": evaluation,
    "registration": registration,
    "attribution": attribution,
    "explanations": explanations,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(SHOTS), default=list(SHOTS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    from qtpy.QtWidgets import QApplication

    from napari_xaimed import __version__

    started = time.perf_counter()
    print(f"napari-xaimed {__version__}: screenshots into {args.out}", flush=True)
    for name in args.only:
        t0 = time.perf_counter()
        print(f"{name}:", flush=True)
        viewer = SHOTS[name]()
        save(viewer, args.out / f"{name}.png")
        viewer.close()
        QApplication.processEvents()
        print(f"  {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
