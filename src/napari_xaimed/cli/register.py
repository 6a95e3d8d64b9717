"""``napari-xaimed register``: the files' geometry as registration needs it, and what the
provenance records of them.

Registration places each image by its spacing and origin along its own voxel axes (napari
``scale`` and ``translate``), as :func:`~napari_xaimed.registration.register` and the
registration widget do; for two files that is the world only when their voxel axes point the
same way, so a moving image whose axes are flipped or permuted against the fixed one's is
turned to follow them (no interpolation), and an oblique rotation between them is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import cli_inputs, provenance
from napari_xaimed.io.lazy import is_lazy


def registration_geometry(args: argparse.Namespace, fixed: Any, moving: Any
                           ) -> tuple[Any, Any, dict[str, Any]]:
    """The moving image on axes parallel to the fixed one's (flips and permutations undone),
    the orientation transform applied (or None), and the label maps, each checked to lie on
    its image's grid (the moving labels turned as the moving image)."""
    from napari_xaimed.io import read_volume
    from napari_xaimed.io.grid import check_same_grid, orient_for_registration, reorient

    oriented, ornt = orient_for_registration(
        moving, fixed, (f"the moving image {Path(args.moving).name}",
                        f"the fixed image {Path(args.fixed).name}"))
    labels: dict[str, Any] = {}
    for key, image, path in (("fixed_labels", fixed, args.fixed),
                             ("moving_labels", moving, args.moving)):
        if getattr(args, key) is None:
            labels[key] = None
            continue
        volume = read_volume(getattr(args, key), lazy=args.lazy)
        check_same_grid(image, volume, (f"the {key.split('_')[0]} image {Path(path).name}",
                                        f"its labels {Path(getattr(args, key)).name}"))
        labels[key] = (volume.data if key == "fixed_labels" or ornt is None
                       else reorient(volume.data, volume.spacing, ornt)[0])
    return oriented, ornt, labels


def registration_inputs(args: argparse.Namespace, fixed: Any, read_moving: Any,
                         moving: Any, ornt: Any) -> dict[str, Any]:
    """The recorded inputs: the files as read, and for a moving image whose axes were turned,
    the turn and the spacing and origin registered (so a rerun turns it again)."""
    inputs = cli_inputs(fixed=(args.fixed, fixed), moving=(args.moving, read_moving))
    if ornt is not None:
        inputs["moving"].update(orientation=ornt.tolist(), spacing=list(moving.spacing),
                                origin=list(moving.translate))
    return inputs


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
