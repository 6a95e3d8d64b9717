"""``napari-xaimed rerun PROVENANCE.json``: compute an output again from its provenance."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_xaimed._errors import XaimedError


def add_parser(sub: Any) -> None:
    """The ``rerun`` subcommand of ``napari-xaimed``."""
    rerun = sub.add_parser(
        "rerun", help="compute an output again from its JSON provenance (the .json beside a "
        "NIfTI written by segment, register, the demo or the plugin's writer)")
    rerun.add_argument("provenance", type=Path,
                       help="the output's .json sidecar (or the output .nii/.nii.gz itself)")
    rerun.add_argument("--out", type=Path, default=None,
                       help="folder for the recomputed output (default: 'rerun' beside it)")
    rerun.add_argument("--check", action="store_true",
                       help="compare with the existing output: exit 1 unless identical")


def run_rerun(args: argparse.Namespace) -> int:
    raise XaimedError("rerun is not implemented yet.")
