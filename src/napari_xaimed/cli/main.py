"""The ``napari-xaimed`` command: the argument parser and the dispatch to one module per command
(:mod:`.demo`, :mod:`.register`, :mod:`.segment`, :mod:`.rerun`, :mod:`.script`,
:mod:`.cohort`).

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
import sys
from pathlib import Path

from napari_xaimed import __version__
from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cli._common import TRUST_HELP, layer_file_stem  # noqa: F401
from napari_xaimed.cli.demo import run_demo
from napari_xaimed.cli.register import run_register
from napari_xaimed.cli.segment import _segment_parser, run_segment


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
    from napari_xaimed.cli.script import add_parser as _script_parser

    _script_parser(sub)
    from napari_xaimed.cli.cohort import add_parsers as _cohort_parsers

    _cohort_parsers(sub)
    return parser


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
        if args.command == "script":
            from napari_xaimed.cli.script import run_script

            return run_script(args)
        if args.command in ("evaluate", "attribute", "embed"):
            from napari_xaimed.cli.cohort import run_cohort_command

            return run_cohort_command(args)
    except XaimedError as exc:
        print(f"napari-xaimed: {exc}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
