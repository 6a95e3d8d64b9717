"""The ``napari-xaimed`` command.

``napari-xaimed demo`` opens napari with the sample data loaded, the demo's results added and the
four widgets docked; ``--headless OUTDIR`` does the same work without a window and writes every
layer to OUTDIR as NIfTI with its JSON provenance, plus ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed import __version__
from napari_xaimed._errors import XaimedError
from napari_xaimed._layers import LayerTuple, error_layer, labels_layer, output_name
from napari_xaimed._provenance import provenance

WIDGETS = ("Segmentation", "Panoptic evaluation", "Registration", "Attribution")
DEMO_SEGMENTATION = {"classes": 4, "smoothing_mm": 1.0, "min_size_mm3": 20.0, "connectivity": 26}
DEMO_EVALUATION = {"matching": "many_to_one", "threshold": 0.3}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    a, b = a != 0, b != 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def demo_layers(seed: int = 0) -> tuple[list[LayerTuple], dict[str, Any]]:
    """The demo's work: the three samples, an Otsu segmentation of the lesion volume and a
    many-to-one panoptic evaluation of the panoptic pair.

    Returns the layers (as napari LayerDataTuples) and a summary of what was found.
    """
    from napari_xaimed import samples
    from napari_xaimed._sample_data import lesion_layers, longitudinal_layers, panoptic_layers
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.segmentation import segment

    lesion = samples.lesion_volume(seed=seed)
    started = time.perf_counter()
    labels = segment(lesion.image, "otsu", spacing=lesion.spacing, **DEMO_SEGMENTATION)
    seconds = time.perf_counter() - started
    prov = provenance("segmentation", sources=["lesion ct"],
                      params={"method": "otsu", **DEMO_SEGMENTATION}, seconds=seconds)
    segmentation = labels_layer(labels, output_name("Segmentation", "lesion ct"), lesion.spacing,
                                provenance=prov)

    pair = samples.panoptic_pair(seed=seed)
    started = time.perf_counter()
    evaluation = evaluate(pair.reference, pair.prediction, instance_input=True,
                          spacing=pair.spacing, keep_maps=True, **DEMO_EVALUATION)
    scores = evaluation["all"]
    errors = error_layer(scores.error_map, output_name("Errors", "prediction"), pair.spacing,
                         provenance=provenance("panoptic evaluation",
                                               sources=["reference", "prediction"],
                                               params=DEMO_EVALUATION, summary=scores.summary(),
                                               seconds=time.perf_counter() - started))

    layers = lesion_layers(seed) + [segmentation]
    for extra in longitudinal_layers(seed) + panoptic_layers(seed) + [errors]:
        extra[1]["visible"] = False  # other grids: available, but not drawn over the lesion volume
        layers.append(extra)
    summary = {
        "version": __version__,
        "seed": seed,
        "lesions_true": int(lesion.lesions.max()),
        "lesions_found": int(labels.max()),
        "lesion_dice": round(dice(labels, lesion.lesions), 4),
        "segmentation_seconds": round(seconds, 3),
        "panoptic": {k: scores.summary()[k] for k in ("tp", "fp", "fn", "pq", "sq", "rq")},
    }
    return layers, summary


def file_stem(name: str) -> str:
    """A layer name as a file name: ``"Segmentation [lesion ct]"`` -> ``"segmentation_lesion_ct"``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "layer"


def write_layers(layers: list[LayerTuple], outdir: Path) -> list[Path]:
    """Write layers with the plugin's own NIfTI writers, as napari's File > Save would."""
    from napari_xaimed._writer import write_image, write_labels

    writers = {"image": write_image, "labels": write_labels}
    written: list[Path] = []
    for data, kwargs, layer_type in layers:
        path = outdir / f"{file_stem(kwargs['name'])}.nii.gz"
        written += [Path(p) for p in writers[layer_type](str(path), data, kwargs)]
    return written


def run_demo(headless: Path | None, seed: int, screenshot: Path | None) -> int:
    layers, summary = demo_layers(seed)
    if headless is not None:
        headless.mkdir(parents=True, exist_ok=True)
        written = write_layers(layers, headless)
        (headless / "summary.json").write_text(json.dumps(summary, indent=2))
        print(f"napari-xaimed {__version__} demo (seed {seed}), headless")
        print(f"  lesions: {summary['lesions_true']} true, {summary['lesions_found']} found by Otsu, "
              f"Dice {summary['lesion_dice']:.3f}")
        pan = summary["panoptic"]
        print(f"  panoptic pair (many-to-one, IoU >= 0.3): TP {pan['tp']} FP {pan['fp']} "
              f"FN {pan['fn']}, PQ {pan['pq']:.3f} (SQ {pan['sq']:.3f} x RQ {pan['rq']:.3f})")
        print(f"  wrote {len(written)} files to {headless}/ (NIfTI + JSON provenance, summary.json)")
        return 0

    import napari

    from napari_xaimed._layers import add_or_update

    viewer = napari.Viewer(title="napari-xaimed demo")
    for layer in layers:
        add_or_update(viewer, layer)
    docked = [viewer.window.add_plugin_dock_widget("napari-xaimed", name, tabify=True)
              for name in WIDGETS]
    segmentation = docked[0][1]
    segmentation.image.value = viewer.layers["lesion ct"]
    segmentation.classes.value = DEMO_SEGMENTATION["classes"]
    segmentation.smoothing.value = DEMO_SEGMENTATION["smoothing_mm"]
    segmentation.min_size.value = DEMO_SEGMENTATION["min_size_mm3"]
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    docked[0][0].raise_()  # open on the Segmentation tab, which made the result shown
    viewer.window._qt_window.resize(1400, 900)
    viewer.dims.set_point(0, _lesion_slice(layers))
    viewer.layers.selection.active = viewer.layers[0]
    print(f"lesions: {summary['lesions_true']} true, {summary['lesions_found']} found, "
          f"Dice {summary['lesion_dice']:.3f}")
    if screenshot is not None:
        for _ in range(10):
            QApplication.processEvents()
            time.sleep(0.05)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(screenshot), canvas_only=False)
        viewer.close()
        print(f"screenshot: {screenshot}")
        return 0
    napari.run()
    return 0


def _lesion_slice(layers: list[LayerTuple]) -> float:
    """World z (mm) of the slice through the largest true lesion, so the demo opens on it."""
    truth, kwargs, _ = next(layer for layer in layers if layer[1]["name"] == "lesion truth")
    if not truth.any():
        return 0.0
    largest = np.bincount(truth.ravel())[1:].argmax() + 1
    z = np.nonzero(truth == largest)[0].mean()
    return float(z * kwargs["scale"][0])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-xaimed",
        description="Explainable AI for 3D medical imaging in napari.",
    )
    parser.add_argument("--version", action="version", version=f"napari-xaimed {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="open napari with the sample data and the widgets")
    demo.add_argument("--headless", metavar="OUTDIR", type=Path,
                      help="do the demo's work without a window and write its outputs here")
    demo.add_argument("--seed", type=int, default=0, help="seed of the sample data (default 0)")
    demo.add_argument("--screenshot", metavar="PNG", type=Path,
                      help="save a screenshot of the viewer with the widgets, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args.headless, args.seed, args.screenshot)
    except XaimedError as exc:
        print(f"napari-xaimed: {exc}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
