"""Compute an output again from its provenance: ``napari-xaimed rerun PROVENANCE.json``.

Every output carries ``metadata["xaimed"]`` (and, saved as NIfTI, a ``.json`` beside it) with
its kind, parameters and ``inputs``: per role (``image``, ``fixed``, ``reference`` ...) where
the voxels came from (a NIfTI path, or the sample generator and seed) and a SHA-256 of them.
:func:`recompute` reads those inputs again, checks they are unchanged and runs the same
computation; :func:`rerun` writes the result as NIfTI and, with ``check=True``, compares it with
the output already on disk.

Kinds it recomputes: ``segmentation`` (labels) with its ``class probability`` and
``foreground probability`` maps, ``panoptic evaluation`` (error map, missed references,
Voronoi regions), ``registration`` (warped, displacement, Jacobian, folded, warped grid),
``registration-apply`` (a layer carried along), ``attribution`` (heatmaps) and
``longitudinal attribution`` (the change maps of a prior and a current scan).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.cli.recompute import (  # noqa: F401 - also importable from here, as before
    LONGITUDINAL_OUTPUTS,
    REGISTRATION_OUTPUTS,
    _evaluation,
    accepted,
    as_tuples,
    recompute,
    registration_result,
)
from napari_xaimed.cli.rerun_inputs import (  # noqa: F401 - also importable from here, as before
    LEGACY_ROLES,
    REGISTRATION_EXTRAS,
    Input,
    _sample_data,
    recorded_inputs,
    resolve_input,
)
from napari_xaimed.io import is_nifti_path, read_volume, sidecar_path, write_volume


@dataclass
class RerunReport:
    """What :func:`rerun` did: the file written and, with ``check``, how it compares."""

    written: Path
    original: Path | None
    identical: bool | None = None
    max_difference: float | None = None
    differing_voxels: int | None = None
    seconds: float = 0.0

    def line(self) -> str:
        if self.identical is None:
            return f"recomputed in {self.seconds:.1f} s: {self.written}"
        if self.identical:
            return f"identical: {self.written} == {self.original}"
        return (f"DIFFERENT: {self.written} vs {self.original}: max |difference| "
                f"{self.max_difference:.6g} in {self.differing_voxels} voxels")


# ------------------------------------------------------------------------------ parameters


# ---------------------------------------------------------------------------------- inputs


# ------------------------------------------------------------------------------ recompute


# ---------------------------------------------------------------------------------- files

def _paths(path: Path) -> tuple[Path, Path | None]:
    """The sidecar and the NIfTI it belongs to (None when no such file exists)."""
    path = Path(path)
    if is_nifti_path(path):
        return sidecar_path(path), path if path.is_file() else None
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    for suffix in (".nii.gz", ".nii"):
        if (path.parent / f"{stem}{suffix}").is_file():
            return path, path.parent / f"{stem}{suffix}"
    return path, None


def read_provenance(path: str | Path) -> tuple[Path, Path | None, dict[str, Any]]:
    """An output's provenance sidecar, given it or its NIfTI: the sidecar's path, the output
    beside it (None when missing) and the provenance dict, or an ``XaimedError`` saying what is
    wrong with the file."""
    side, original = _paths(Path(path))
    if not side.is_file():
        raise XaimedError(f"No provenance file at {str(side)!r}: give the .json written beside "
                          "the output NIfTI.")
    try:
        prov = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise XaimedError(f"{side.name!r} is not valid JSON ({exc}).") from exc
    if not isinstance(prov, dict) or "kind" not in prov:
        raise XaimedError(f"{side.name!r} is not an output's provenance (no 'kind').")
    return side, original, prov


def rerun(path: str | Path, out: str | Path | None = None, check: bool = False,
          trust: bool = False) -> RerunReport:
    """Recompute the output whose provenance is ``path`` and write it to ``out``.

    Parameters
    ----------
    path : str or pathlib.Path
        The output's JSON sidecar, or the output NIfTI (its sidecar beside it).
    out : path, optional
        Folder for the recomputed NIfTI (and its JSON); default ``rerun/`` beside the sidecar.
    check : bool
        Compare the recomputed output with the existing one, voxel for voxel.
    trust : bool
        Run the code the model file names (``--trust``): a record of a trusted load does not
        carry that leave.

    Returns
    -------
    RerunReport
    """
    side, original, prov = read_provenance(path)
    if check and original is None:
        raise XaimedError(f"--check needs the output beside {side.name!r} "
                          f"({side.stem}.nii.gz): it is not there.")
    started = time.perf_counter()
    data = np.asarray(recompute(prov, side.parent.resolve(), side.stem, trust))
    seconds = time.perf_counter() - started
    folder = Path(out) if out is not None else side.parent / "rerun"
    target = folder / (original.name if original is not None else f"{side.stem}.nii.gz")
    if original is not None and target.resolve() == original.resolve():
        raise XaimedError("--out is the output's own folder: pick another, so the original "
                          "is kept to compare with.")
    is_label = np.issubdtype(data.dtype, np.integer) or data.dtype == bool
    affine = None
    if original is not None:
        import nibabel as nib

        header = nib.load(str(original)).header
        is_label = header.get_intent()[0] == "label"
        affine = nib.load(str(original)).affine
    spacing = _output_spacing(prov, data) if affine is None else None
    from napari_xaimed import __version__

    record = {**prov, "rerun": {"of": str(side), "version": __version__,
                                "seconds": round(seconds, 4)}}
    write_volume(target, data, spacing=spacing, affine=affine, is_label=is_label,
                 metadata=record)
    report = RerunReport(written=target, original=original, seconds=seconds)
    if check:
        assert original is not None
        again, before = read_volume(target).data, read_volume(original).data
        if again.shape != before.shape:
            report.identical, report.max_difference = False, float("inf")
            report.differing_voxels = int(max(again.size, before.size))
        else:
            same = np.array_equal(again, before, equal_nan=again.dtype.kind == "f")
            report.identical = bool(same)
            diff = np.abs(again.astype(np.float64) - before.astype(np.float64))
            differs = ~((diff == 0) | (np.isnan(again.astype(np.float64))
                                      & np.isnan(before.astype(np.float64))))
            report.differing_voxels = int(differs.sum())
            report.max_difference = float(np.nanmax(diff)) if diff.size and differs.any() \
                else 0.0
    return report


def _output_spacing(prov: dict[str, Any], data: np.ndarray) -> tuple[float, ...] | None:
    """Voxel size of an output written without the original beside it: its grid's input."""
    inputs = prov.get("inputs") or {}
    for role in ("image", "fixed", "reference", "layer"):
        record = inputs.get(role) or {}
        if record.get("spacing"):
            return tuple(record["spacing"])
    return None


def run_rerun(args: argparse.Namespace) -> int:
    """The ``rerun`` command: recompute, write, and with ``--check`` compare (exit 1 when the
    outputs differ)."""
    report = rerun(args.provenance, args.out, args.check, args.trust)
    print(f"napari-xaimed rerun: {report.line()}")
    return 0 if report.identical in (None, True) else 1


def add_parser(sub: Any) -> None:
    """The ``rerun`` subcommand of ``napari-xaimed``."""
    rerun_parser = sub.add_parser(
        "rerun", help="compute an output again from its JSON provenance (the .json beside a "
        "NIfTI written by segment, register, the demo or the plugin's writer)")
    rerun_parser.add_argument("provenance", type=Path,
                              help="the output's .json sidecar (or the output .nii/.nii.gz)")
    rerun_parser.add_argument("--out", type=Path, default=None,
                              help="folder for the recomputed output (default: 'rerun' beside "
                                   "the provenance file)")
    rerun_parser.add_argument("--check", action="store_true",
                              help="compare with the existing output: exit 1 unless identical")
    from napari_xaimed.cli._common import TRUST_HELP

    rerun_parser.add_argument("--trust", action="store_true", help=TRUST_HELP)

