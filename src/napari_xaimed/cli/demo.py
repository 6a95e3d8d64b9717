"""``napari-xaimed demo``: napari with the sample data, the demo's results and the widgets; with
``--headless OUTDIR`` the same work without a window, every layer written to OUTDIR."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed import __version__
from napari_xaimed._core.provenance import provenance
from napari_xaimed.cli._common import layer_file_stem
from napari_xaimed.viewer.layers import LayerTuple, error_layer, labels_layer, output_name

WIDGETS = ("Segmentation", "Panoptic evaluation", "Registration", "Attribution")


DEMO_SEGMENTATION = {"classes": 4, "smoothing_mm": 1.0, "min_size_mm3": 20.0, "connectivity": 26}


DEMO_EVALUATION = {"matching": "many_to_one", "threshold": 0.3}


DEMO_ATTRIBUTION = {"integrated_gradients": {"steps": 32}, "gradcam": {}}


def _explain_lesion(lesion: Any) -> tuple[list[LayerTuple], dict[str, Any]]:
    """The bundled lesion classifier's decision on the lesion volume, explained by Integrated
    Gradients and Grad-CAM (heatmap layers), and what it predicted."""
    from napari_xaimed.attribution import attribute, load_model
    from napari_xaimed.viewer.layers import heatmap_layer
    from napari_xaimed.viewer.widgets.attribution import title

    model = load_model("bundled")
    layers, result = [], None
    for method, params in DEMO_ATTRIBUTION.items():
        result = attribute(model, lesion.image, method, device="auto", **params)
        prov = provenance("attribution", sources=["lesion ct"], seconds=result.seconds,
                          device=result.device, params={"method": method, **result.params},
                          model=result.model, scores=result.scores)
        layers.append(heatmap_layer(result.map, output_name(title(method), "lesion ct"),
                                    lesion.spacing, signed=result.signed, provenance=prov))
    assert result is not None
    classes = result.model["classes"]
    return layers, {"predicted": classes[result.target], "truth": classes[lesion.label],
                    "scores": [round(s, 4) for s in result.scores]}


def demo_layers(seed: int = 0) -> tuple[list[LayerTuple], dict[str, Any]]:
    """The demo's work: the three samples, an Otsu segmentation of the lesion volume, the
    bundled lesion classifier's decision on it explained (Integrated Gradients, Grad-CAM) and a
    many-to-one panoptic evaluation of the panoptic pair.

    Returns the layers (as napari LayerDataTuples) and a summary of what was found.
    """
    from napari_xaimed import samples
    from napari_xaimed.components.overlap import mask_dice
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.segmentation import segment
    from napari_xaimed.viewer.sample_data import lesion_layers, longitudinal_layers, panoptic_layers
    from napari_xaimed.viewer.widgets.segmentation import segmentation_name

    lesion = samples.lesion_volume(seed=seed)
    started = time.perf_counter()
    labels = segment(lesion.image, "otsu", spacing=lesion.spacing, **DEMO_SEGMENTATION)
    seconds = time.perf_counter() - started
    prov = provenance("segmentation", sources=["lesion ct"],
                      params={"method": "otsu", **DEMO_SEGMENTATION}, seconds=seconds)
    # named as the Segmentation widget names it, so Segment in the demo window replaces it
    segmentation = labels_layer(labels, segmentation_name("otsu", "lesion ct"), lesion.spacing,
                                provenance=prov)

    pair = samples.panoptic_pair(seed=seed)
    started = time.perf_counter()
    evaluation = evaluate(pair.reference, pair.prediction, instance_input=True,
                          spacing=pair.spacing, keep_maps=True, **DEMO_EVALUATION)
    scores = evaluation["all"]
    errors = error_layer(scores.error_map, output_name("Errors", "prediction"), pair.spacing,
                         provenance=provenance("panoptic evaluation",
                                               sources=["reference", "prediction"],
                                               params={**DEMO_EVALUATION, "instance_input": True},
                                               summary=scores.summary(),
                                               seconds=time.perf_counter() - started))

    explanations, explained = _explain_lesion(lesion)
    layers = lesion_layers(seed) + [segmentation] + explanations
    for extra in longitudinal_layers(seed) + panoptic_layers(seed) + [errors]:
        extra[1]["visible"] = False  # other grids: available, but not drawn over the lesion volume
        layers.append(extra)
    summary = {
        "version": __version__,
        "seed": seed,
        "lesions_true": int(lesion.lesions.max()),
        "lesions_found": int(labels.max()),
        "lesion_dice": round(mask_dice(labels, lesion.lesions), 4),
        "segmentation_seconds": round(seconds, 3),
        "panoptic": {k: scores.summary()[k] for k in ("tp", "fp", "fn", "pq", "sq", "rq")},
        "lesion_classifier": explained,
    }
    return layers, summary


def write_layers(layers: list[LayerTuple], outdir: Path) -> list[Path]:
    """Write layers with the plugin's own NIfTI writers, as napari's File > Save would."""
    from napari_xaimed.viewer.writer import write_image, write_labels

    writers = {"image": write_image, "labels": write_labels}
    written: list[Path] = []
    for data, kwargs, layer_type in layers:
        path = outdir / f"{layer_file_stem(kwargs['name'])}.nii.gz"
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
        clf = summary["lesion_classifier"]
        print(f"  bundled lesion classifier: predicts {clf['predicted']!r} (truth "
              f"{clf['truth']!r}), explained by Integrated Gradients and Grad-CAM")
        pan = summary["panoptic"]
        print(f"  panoptic pair (many-to-one, IoU >= 0.3): TP {pan['tp']} FP {pan['fp']} "
              f"FN {pan['fn']}, PQ {pan['pq']:.3f} (SQ {pan['sq']:.3f} x RQ {pan['rq']:.3f})")
        print(f"  wrote {len(written)} files to {headless}/ (NIfTI + JSON provenance, summary.json)")
        return 0

    import napari

    viewer = napari.Viewer(title="napari-xaimed demo")
    show_layers(viewer, layers)
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


def show_layers(viewer: Any, layers: list[LayerTuple]) -> None:
    """Add the demo's layers to ``viewer``, in order, as the widgets would: every heatmap with
    its titled colour bar, and the shown ones through
    :func:`~napari_xaimed.viewer.heatmaps.show_heatmaps`, so only the last (Grad-CAM) is drawn
    over the lesion volume."""
    from napari_xaimed.viewer.heatmap_style import VALUES
    from napari_xaimed.viewer.heatmaps import show_heatmaps, watch
    from napari_xaimed.viewer.layers import add_or_update

    watch(viewer)  # the hidden heatmaps get their colour bars too
    for layer in layers:
        if VALUES in layer[1].get("metadata", {}) and layer[1].get("visible", True):
            show_heatmaps(viewer, [layer])
        else:
            add_or_update(viewer, layer)


def _lesion_slice(layers: list[LayerTuple]) -> float:
    """World z (mm) of the slice through the largest true lesion, so the demo opens on it."""
    truth, kwargs, _ = next(layer for layer in layers if layer[1]["name"] == "lesion truth")
    if not truth.any():
        return 0.0
    largest = np.bincount(truth.ravel())[1:].argmax() + 1
    z = np.nonzero(truth == largest)[0].mean()
    return float(z * kwargs["scale"][0])
