"""``napari-xaimed segment IMAGE --method ... --out DIR``: labels, class probabilities and
``segmentation.json``; a Zarr store (or ``--lazy`` NIfTI) slab by slab into ``labels.zarr``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import cli_inputs, provenance
from napari_xaimed.cli._common import TRUST_HELP
from napari_xaimed.io.lazy import is_lazy

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
