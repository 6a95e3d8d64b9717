"""The ``napari-xaimed`` command.

``napari-xaimed demo`` opens napari with the sample data loaded, the demo's results added and the
four widgets docked; ``--headless OUTDIR`` does the same work without a window and writes every
layer to OUTDIR as NIfTI with its JSON provenance, plus ``summary.json``.

``napari-xaimed register FIXED MOVING --out DIR`` registers two NIfTI volumes with ANTs (placed by
their origins and orientations, see :mod:`napari_xaimed.cli.register`) and writes the warped
image, the displacement field, its Jacobian determinant, the folded voxels and
``quality.json``; with a Zarr input (or ``--lazy`` NIfTI) it registers block-mean copies and
warps the moving image at full resolution into ``warped.zarr``.

``napari-xaimed segment IMAGE --method otsu --out DIR`` segments a NIfTI volume and writes the
labels (with the image's affine), the class probability maps of kmeans/atropos and
``segmentation.json`` (facts and provenance). A Zarr store, or a NIfTI with ``--lazy``, is
segmented slab by slab (Otsu, a threshold value, a model's sliding windows) into
``labels.zarr``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed import __version__
from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import cli_inputs, provenance
from napari_xaimed.cli._common import TRUST_HELP, file_stem
from napari_xaimed.io.lazy import is_lazy
from napari_xaimed.viewer.layers import LayerTuple, error_layer, labels_layer, output_name

WIDGETS = ("Segmentation", "Panoptic evaluation", "Registration", "Attribution")
DEMO_SEGMENTATION = {"classes": 4, "smoothing_mm": 1.0, "min_size_mm3": 20.0, "connectivity": 26}
DEMO_EVALUATION = {"matching": "many_to_one", "threshold": 0.3}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks (1.0 when both are empty)."""
    a, b = a != 0, b != 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


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
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.segmentation import segment
    from napari_xaimed.viewer.sample_data import lesion_layers, longitudinal_layers, panoptic_layers

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
        "lesion_dice": round(dice(labels, lesion.lesions), 4),
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
        clf = summary["lesion_classifier"]
        print(f"  bundled lesion classifier: predicts {clf['predicted']!r} (truth "
              f"{clf['truth']!r}), explained by Integrated Gradients and Grad-CAM")
        pan = summary["panoptic"]
        print(f"  panoptic pair (many-to-one, IoU >= 0.3): TP {pan['tp']} FP {pan['fp']} "
              f"FN {pan['fn']}, PQ {pan['pq']:.3f} (SQ {pan['sq']:.3f} x RQ {pan['rq']:.3f})")
        print(f"  wrote {len(written)} files to {headless}/ (NIfTI + JSON provenance, summary.json)")
        return 0

    import napari

    from napari_xaimed.viewer.layers import add_or_update

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


def run_register(args: argparse.Namespace) -> int:
    """The ``register`` command: read, register, write (see the module docstring)."""
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.cli.register import registration_geometry, registration_inputs
    from napari_xaimed.io import read_volume, write_volume
    from napari_xaimed.registration import register_steps

    fixed = read_volume(args.fixed, lazy=args.lazy)
    read_moving = read_volume(args.moving, lazy=args.lazy)
    moving, ornt, labels = registration_geometry(args, fixed, read_moving)
    params: dict[str, Any] = {}
    if args.iterations:
        params["iterations"] = tuple(int(v) for v in args.iterations.split(","))
    if args.metric:
        params["metric"] = args.metric
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    last = [""]

    def report(step: Any) -> None:
        if step.message != last[0]:
            print(f"  {step.message}", file=sys.stderr, flush=True)
            last[0] = step.message

    if is_lazy(fixed.data) or is_lazy(moving.data):
        return _register_lazy(args, fixed, moving, labels, params, report,
                              registration_inputs(args, fixed, read_moving, moving, ornt))
    result = run_steps(register_steps(
        fixed.data, moving.data, fixed_spacing=fixed.spacing, moving_spacing=moving.spacing,
        fixed_origin=fixed.translate, moving_origin=moving.translate, transform=args.transform,
        seed=None if args.seed < 0 else args.seed,
        threads=args.threads, transforms_dir=out / "transforms" if args.keep_transforms else None,
        **labels, **params), report)
    sources = [Path(args.moving).name, Path(args.fixed).name]
    prov = provenance("registration", sources=sources, params=result.params,
                      seconds=result.seconds, metrics=result.metrics,
                      inputs=registration_inputs(args, fixed, read_moving, moving, ornt))
    written = []
    written += write_volume(out / "warped.nii.gz", result.warped, affine=fixed.affine,
                            metadata=prov)
    written += write_volume(
        out / "displacement.nii.gz", np.moveaxis(result.displacement, -1, 0),
        affine=fixed.affine,
        metadata={**prov, "layout": "4th NIfTI axis = components (z, y, x) in mm of the "
                  "pull-back displacement: fixed voxel p takes the moving image at p + u(p)"})
    written += write_volume(out / "jacobian.nii.gz", result.jacobian, affine=fixed.affine,
                            metadata=prov)
    written += write_volume(out / "folded.nii.gz", result.folded, affine=fixed.affine,
                            is_label=True, metadata=prov)
    (out / "quality.json").write_text(json.dumps(provenance(
        "registration quality", sources=sources, params=result.params,
        seconds=result.seconds, result=result.to_dict()), indent=2))
    m = result.metrics
    print(f"napari-xaimed register ({result.transform}): NCC {m['ncc_before']:.3f} -> "
          f"{m['ncc_after']:.3f}, folded {m['folded_percent']:.3f}% in {result.seconds:.1f} s; "
          f"wrote {len(written) + 1} files to {out}/")
    return 0


def _register_lazy(args: argparse.Namespace, fixed: Any, moving: Any, labels: dict[str, Any],
                   params: dict[str, Any], report: Any, inputs: dict[str, Any]) -> int:
    """``register`` with a volume opened lazily: ANTs on block-mean copies, the moving image
    warped at full resolution slab by slab into ``warped.zarr``; the field's outputs on the
    coarse fixed grid (its affine keeps the fixed image's axes)."""
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.io import affine_from_grid, write_volume
    from napari_xaimed.registration.lazy import register_lazy_steps

    if args.keep_transforms:
        raise XaimedError("--keep-transforms is not available for volumes opened lazily: the "
                          "transforms are those of the downsampled copies. Leave it out.")
    lazy = run_steps(register_lazy_steps(
        fixed.data, moving.data, fixed_spacing=fixed.spacing, moving_spacing=moving.spacing,
        fixed_origin=fixed.translate, moving_origin=moving.translate,
        transform=args.transform, seed=None if args.seed < 0 else args.seed,
        threads=args.threads, out=Path(args.out) / "warped.zarr", max_voxels=args.max_voxels,
        **labels, **params), report)
    result, out = lazy.coarse, Path(args.out)
    sources = [Path(args.moving).name, Path(args.fixed).name]
    prov = provenance("registration", sources=sources, params=result.params,
                      seconds=lazy.seconds, metrics=result.metrics,
                      lazy=lazy.to_dict(), inputs=inputs)
    affine = affine_from_grid(lazy.coarse_spacing, lazy.coarse_origin, template=fixed.affine)
    written = write_volume(
        out / "displacement.nii.gz", np.moveaxis(result.displacement, -1, 0), affine=affine,
        metadata={**prov, "layout": "4th NIfTI axis = components (z, y, x) in mm of the "
                  "pull-back displacement on the coarse fixed grid"})
    written += write_volume(out / "jacobian.nii.gz", result.jacobian, affine=affine,
                            metadata=prov)
    written += write_volume(out / "folded.nii.gz", result.folded, affine=affine,
                            is_label=True, metadata=prov)
    (out / "quality.json").write_text(json.dumps(provenance(
        "registration quality", sources=sources, params=result.params, seconds=lazy.seconds,
        result=lazy.to_dict()), indent=2, default=str))
    m = result.metrics
    print(f"napari-xaimed register ({result.transform}, on copies downsampled by "
          f"{lazy.moving_factors} and {lazy.fixed_factors}): NCC {m['ncc_before']:.3f} -> "
          f"{m['ncc_after']:.3f} (coarse), in {lazy.seconds:.1f} s; wrote warped.zarr at full "
          f"resolution and {len(written) + 1} files on the coarse grid to {out}/")
    return 0


#: CLI option -> segment() parameter; only the options given are passed on, so an option that
#: does not fit the method is refused with the method's own message.
SEGMENT_OPTIONS = {
    "value": "value", "percentile": "percentile", "classes": "classes",
    "n_classes": "n_classes", "mrf": "mrf", "iterations": "iterations",
    "smoothing_mm": "smoothing_mm", "opening_mm": "opening_mm", "min_size_mm3": "min_size_mm3",
    "connectivity": "connectivity", "split": "split", "min_distance_mm": "min_distance_mm",
    "model": "model", "roi_size": "roi_size", "overlap": "overlap",
    "sw_batch_size": "sw_batch_size", "device": "device", "output": "output",
    "model_threshold": "threshold", "channel": "channel", "model_spacing": "model_spacing",
}


def run_segment(args: argparse.Namespace) -> int:
    """The ``segment`` command: read, segment, write (see the module docstring)."""
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.io import read_volume, write_volume
    from napari_xaimed.segmentation import segment_steps

    image = read_volume(args.image, lazy=args.lazy)
    params: dict[str, Any] = {key: getattr(args, option) for option, key in
                              SEGMENT_OPTIONS.items() if getattr(args, option) is not None}
    for flag, key, value in ((args.fill_holes, "fill_holes", True),
                             (args.no_instances, "instances", False),
                             (args.unseeded, "reproducible", False),
                             (args.largest_component, "largest_component", True),
                             (args.trust, "trust", True)):
        if flag:
            params[key] = value
    if params.get("roi_size") is not None and len(params["roi_size"]) == 1:
        params["roi_size"] = params["roi_size"][0]
    if is_lazy(image.data) and args.method in LAZY_METHODS:
        return _segment_lazy(args, image, params)
    mask = None if args.mask is None else read_volume(args.mask)
    if mask is not None:
        params["mask"] = mask.data
    result = run_steps(segment_steps(image.data, args.method, spacing=image.spacing, **params))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = [Path(args.image).name] + ([Path(args.mask).name] if args.mask else [])
    prov = provenance("segmentation", sources=sources, params={"method": args.method,
                      **result.params}, seconds=result.seconds, facts=result.facts,
                      label_kind=result.kind,
                      inputs=cli_inputs(image=(args.image, image), mask=(args.mask, mask)))
    written = write_volume(out / "labels.nii.gz", result.labels, affine=image.affine,
                           is_label=True, metadata=prov)
    if result.facts.get("probabilities") == "foreground":  # the user's model
        written += write_volume(out / "probability_foreground.nii.gz", result.probabilities[0],
                                affine=image.affine,
                                metadata={**prov, "kind": "foreground probability"})
    elif result.probabilities is not None:
        for k, probability in enumerate(result.probabilities, start=1):
            written += write_volume(out / f"probability_class{k}.nii.gz", probability,
                                    affine=image.affine,
                                    metadata={**prov, "kind": "class probability", "class": k})
    (out / "segmentation.json").write_text(json.dumps(
        {**prov, "result": result.to_dict()}, indent=2, default=str))
    found = (f"{result.facts['instances']} instances" if "instances" in result.facts else
             f"{int(result.labels.max())} {'classes' if result.kind == 'classes' else 'label'}")
    print(f"napari-xaimed segment ({args.method}): {found} in {result.seconds:.1f} s; wrote "
          f"{len(written) + 1} files to {out}/")
    return 0


#: the methods a lazy input (a Zarr, or a NIfTI with --lazy) is segmented with slab by slab
LAZY_METHODS = ("otsu", "threshold", "model")
MODEL_LAZY_OPTIONS = {"roi_size", "overlap", "sw_batch_size", "device", "output", "threshold",
                      "channel", "trust"}


def _segment_lazy(args: argparse.Namespace, image: Any, params: dict[str, Any]) -> int:
    """``segment`` on a volume opened lazily: slab by slab (Otsu, a threshold value) or by
    bands of sliding windows (a model) into ``labels.zarr``, with bounded memory."""
    from napari_xaimed.segmentation.lazy import segment_lazy, segment_model_lazy

    if args.mask is not None:
        raise XaimedError("--mask is for kmeans/atropos, which read the volume whole: leave it "
                          "out for a volume opened lazily.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels_path = out / "labels.zarr"
    geometry = {"spacing": image.spacing, "origin": image.translate, "overwrite": True}
    if args.method == "model":
        model = params.pop("model", "bundled-segmenter")
        if "model_spacing" in params:
            raise XaimedError("--model-spacing resamples the whole volume: it is not done "
                              "lazily; leave it out, or segment a crop in memory.")
        if params.pop("largest_component", False):
            raise XaimedError("--largest-component needs the whole mask's components: it is "
                              "not done lazily; leave it out, or segment a crop in memory.")
        unused = set(params) - MODEL_LAZY_OPTIONS
        if unused:
            raise XaimedError(f"the model's lazy segmentation does not take "
                              f"{', '.join(sorted(unused))}: leave them out.")
        result = segment_model_lazy(
            image.data, model, labels_path,
            probability_out=out / "probability_foreground.zarr", **geometry, **params)
    else:
        result = segment_lazy(image.data, labels_path, args.method, **geometry, **params)
    prov = provenance("segmentation", sources=[Path(args.image).name],
                      params={"method": args.method, **result.params},
                      seconds=result.seconds,
                      facts={"threshold": result.threshold, "instances": result.n_instances,
                             "labels_store": str(labels_path)},
                      label_kind="instances" if args.method != "model" and
                      params.get("instances", True) else "mask",
                      inputs=cli_inputs(image=(args.image, image)))
    (out / "segmentation.json").write_text(json.dumps(prov, indent=2, default=str))
    found = (f"{result.n_instances} instances" if args.method != "model" else "labels")
    print(f"napari-xaimed segment ({args.method}, slab by slab): {found} in "
          f"{result.seconds:.1f} s; wrote {labels_path.name} and segmentation.json to {out}/")
    return 0


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
    reg = sub.add_parser("register", help="register two volumes with ANTs")
    reg.add_argument("fixed", type=Path, help="fixed (reference) volume: NIfTI, NRRD, MHA, a "
                     "DICOM folder, or a Zarr store (read lazily)")
    reg.add_argument("moving", type=Path, help="moving volume, aligned onto the fixed one")
    reg.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    reg.add_argument("--transform", default="SyN",
                     help="Rigid, Affine, SyN (default), SyNRA, SyNOnly, ElasticSyN, QuickSyN")
    reg.add_argument("--iterations", help="per level, coarse to fine, e.g. 40,20,0")
    reg.add_argument("--metric", help="mattes, CC, meansquares or demons")
    reg.add_argument("--seed", type=int, default=0,
                     help="random seed (default 0, reproducible); -1: unseeded")
    reg.add_argument("--threads", type=int, default=None,
                     help="ITK threads (default 1 with a seed, all cores without)")
    reg.add_argument("--fixed-labels", type=Path, help="label map of the fixed volume (Dice)")
    reg.add_argument("--moving-labels", type=Path, help="label map of the moving volume (Dice)")
    reg.add_argument("--lazy", action="store_true",
                     help="open NIfTI inputs lazily (larger than memory): ANTs registers "
                     "block-mean copies, the moving image is warped at full resolution into "
                     "warped.zarr (always so when an input is a Zarr store)")
    reg.add_argument("--max-voxels", type=int, default=2**24,
                     help="lazy inputs: each downsampled copy has at most this many voxels "
                     "(default 2^24, 256^3)")
    reg.add_argument("--keep-transforms", action="store_true",
                     help="also save ANTs' transform files (.mat, warp NIfTI) under OUT/transforms")
    _segment_parser(sub)
    from napari_xaimed.cli.rerun import add_parser as _rerun_parser

    _rerun_parser(sub)
    from napari_xaimed.cli.cohort import add_parsers as _cohort_parsers

    _cohort_parsers(sub)
    return parser


def _segment_parser(sub: Any) -> None:
    from napari_xaimed.segmentation import METHODS

    seg = sub.add_parser("segment", help="segment a NIfTI volume (threshold, Otsu, ANTs "
                         "classes, or a model by sliding windows)")
    seg.add_argument("image", type=Path, help="volume to segment: NIfTI, NRRD, MHA, a DICOM "
                     "folder, or a Zarr store (read lazily)")
    seg.add_argument("--lazy", action="store_true",
                     help="open a NIfTI lazily (a volume larger than memory): otsu, threshold "
                     "and model then run slab by slab and write labels.zarr (always so for "
                     "a Zarr store)")
    seg.add_argument("--out", required=True, type=Path, help="folder for the outputs")
    seg.add_argument("--method", default="otsu", choices=sorted(METHODS),
                     help="segmentation method (default otsu)")
    seg.add_argument("--value", type=float, help="threshold: absolute value")
    seg.add_argument("--percentile", type=float, help="threshold: percentile (0-100)")
    seg.add_argument("--classes", type=int, help="otsu/multiotsu: number of Otsu classes")
    seg.add_argument("--n-classes", type=int, help="kmeans/atropos: number of tissue classes")
    seg.add_argument("--mask", type=Path, help="kmeans/atropos: NIfTI mask of where to classify")
    seg.add_argument("--mrf", type=float, help="kmeans/atropos: MRF smoothing weight")
    seg.add_argument("--iterations", type=int, help="kmeans/atropos: EM iterations")
    seg.add_argument("--unseeded", action="store_true",
                     help="kmeans/atropos: random seed and all threads (not reproducible)")
    seg.add_argument("--smoothing-mm", type=float, help="Gaussian smoothing sigma in mm")
    seg.add_argument("--opening-mm", type=float, help="opening with a ball of this radius (mm)")
    seg.add_argument("--fill-holes", action="store_true", help="fill cavities of the mask")
    seg.add_argument("--no-instances", action="store_true",
                     help="write a 0/1 mask instead of connected components")
    seg.add_argument("--min-size-mm3", type=float, help="drop smaller instances (mm^3)")
    seg.add_argument("--connectivity", type=int, choices=[6, 18, 26],
                     help="instance connectivity (default 26)")
    seg.add_argument("--split", choices=["watershed"], help="split touching objects")
    seg.add_argument("--min-distance-mm", type=float,
                     help="watershed: minimum distance between object centres (mm)")
    seg.add_argument("--model", help="model: a TorchScript file, a state dict with <name>.json "
                     "beside it, a MONAI bundle folder, or bundled-segmenter (default)")
    seg.add_argument("--roi-size", type=int, nargs="+",
                     help="model: sliding-window size in voxels (one or three numbers)")
    seg.add_argument("--overlap", type=float, help="model: window overlap (0-1, default 0.25)")
    seg.add_argument("--sw-batch-size", type=int, help="model: windows per forward pass")
    seg.add_argument("--device", help="model: auto (default), cpu, cuda")
    seg.add_argument("--output", choices=["softmax", "sigmoid"],
                     help="model: how its channels become labels (default softmax)")
    seg.add_argument("--model-threshold", type=float, help="model: sigmoid threshold (0.5)")
    seg.add_argument("--channel", type=int, help="model: the channel whose probability is kept")
    seg.add_argument("--largest-component", action="store_true",
                     help="model: keep only the largest connected component")
    seg.add_argument("--model-spacing", type=float, nargs=3,
                     help="model: the voxel size (mm) it was trained at; resampled and back")
    seg.add_argument("--trust", action="store_true", help=f"model: {TRUST_HELP}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args.headless, args.seed, args.screenshot)
        if args.command == "register":
            return run_register(args)
        if args.command == "segment":
            return run_segment(args)
        if args.command == "rerun":
            from napari_xaimed.cli.rerun import run_rerun

            return run_rerun(args)
        if args.command in ("evaluate", "attribute", "embed"):
            from napari_xaimed.cli.cohort import run_cohort_command

            return run_cohort_command(args)
    except XaimedError as exc:
        print(f"napari-xaimed: {exc}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
