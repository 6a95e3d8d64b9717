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
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import array_sha256
from napari_xaimed.io import is_nifti_path, read_volume, sidecar_path, write_volume

#: Which input each source name stands for, per kind, for provenance without ``inputs``
#: (written before they were recorded): the order of ``sources``.
LEGACY_ROLES = {
    "segmentation": ("image", "mask"),
    "class probability": ("image", "mask"),
    "foreground probability": ("image", "mask"),
    "panoptic evaluation": ("reference", "prediction"),
    "registration": ("moving", "fixed"),
    "attribution": ("image",),
}
#: Optional inputs of a registration, passed to ``register`` when recorded.
REGISTRATION_EXTRAS = ("fixed_mask", "moving_mask", "fixed_labels", "moving_labels",
                       "fixed_points", "moving_points")


@dataclass
class Input:
    """One input found again: its voxels and the geometry the computation used."""

    name: str
    data: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] | None = None


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

def accepted(func: Any, params: dict[str, Any], extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The provenance parameters ``func`` takes (keyword names, or ``extra`` for its
    ``**params``); the others are facts recorded beside them."""
    names = set(inspect.signature(func).parameters) | set(extra)
    return {k: v for k, v in params.items() if k in names}


def as_tuples(params: dict[str, Any]) -> dict[str, Any]:
    """JSON turned tuples into lists; the functions take either, but keep sizes as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


# ---------------------------------------------------------------------------------- inputs

def _sample_data(record: dict[str, Any]) -> np.ndarray:
    """A sample layer generated again: the one whose provenance kind and params match."""
    from napari_xaimed.viewer import sample_data as _sample_data

    sample = record["sample"]
    params = sample.get("params", {})
    seeded = {"lesion_volume": _sample_data.lesion_layers,
              "longitudinal_pair": _sample_data.longitudinal_layers,
              "panoptic_pair": _sample_data.panoptic_layers}
    generator = params.get("generator")
    if generator in seeded:
        layers = seeded[generator](int(params.get("seed", 0)))
    elif generator == "mni152":
        layers = _sample_data.mni152_layers(int(params.get("resolution", 2)))
    else:
        raise XaimedError(f"input {record.get('name')!r} came from an unknown sample generator "
                          f"{generator!r}: save the input layer as NIfTI first.")
    for data, kwargs, _ in layers:
        prov = kwargs.get("metadata", {}).get("xaimed", {})
        if prov.get("kind") == sample.get("kind") and prov.get("params") == params:
            return np.asarray(data)
    for data, kwargs, _ in layers:  # provenance of another version: the same layer name
        if kwargs.get("name") == record.get("name"):
            return np.asarray(data)
    raise XaimedError(f"input {record.get('name')!r}: the sample generator no longer makes it; "
                      "save the input layer as NIfTI first.")


def _missing(role: str, name: str) -> XaimedError:
    return XaimedError(
        f"input {role} {name!r} was an in-memory layer with no file, so a rerun cannot find it: "
        "save the input layer first (File > Save Selected Layers, as .nii.gz), open that file, "
        "compute the output from it and save the output again.")


def resolve_input(role: str, record: dict[str, Any], base: Path | None = None) -> Any:
    """The voxels (or points) of one recorded input, checked against its SHA-256.

    A recorded path that no longer exists is also looked for beside the provenance file
    (``base``), so a folder of outputs and inputs can move.
    """
    name = record.get("name", role)
    if "points_world_mm" in record:
        return np.asarray(record["points_world_mm"], dtype=np.float64).reshape(-1, 3)
    spacing, origin = record.get("spacing"), record.get("origin")
    if record.get("path"):
        path = Path(record["path"])
        if not path.is_file() and base is not None and (base / path.name).is_file():
            path = base / path.name
        if not path.is_file():
            raise XaimedError(
                f"input {role} {name!r}: no file at {record['path']!r}"
                + (f" (nor beside {str(base)!r})" if base is not None else "")
                + ": restore it there, or put it beside the provenance file.")
        volume = read_volume(path)
        data, where = volume.data, str(path)
        spacing = spacing or volume.spacing
    elif record.get("sample"):
        data, where = _sample_data(record), f"sample {record['sample']['params']}"
    else:
        raise _missing(role, name)
    digest = record.get("sha256")
    if digest is not None and (list(data.shape) != list(record.get("shape", data.shape))
                               or array_sha256(data) != digest):
        raise XaimedError(
            f"input {role} {name!r} ({where}) has changed since the output was computed (its "
            "voxels' SHA-256 differs from the recorded one): restore the original input, or "
            "compute the output anew instead of rerunning it.")
    if record.get("orientation") is not None:  # the file's axes were flipped or permuted
        from napari_xaimed.io.grid import reorient  # (spacing and origin recorded as used)

        data = reorient(data, (1.0, 1.0, 1.0), record["orientation"])[0]
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    origin = None if origin is None else tuple(float(o) for o in origin)
    return Input(name=name, data=data, spacing=spacing, origin=origin)  # type: ignore[arg-type]


def _legacy_file(name: str, base: Path | None) -> Path | None:
    from napari_xaimed.cli._common import file_stem

    candidates = [name] if is_nifti_path(name) else [
        f"{file_stem(name)}.nii.gz", f"{name}.nii.gz", f"{name}.nii", f"{file_stem(name)}.nii"]
    folders = [base, base.parent] if base is not None else []
    for folder in [*folders, Path.cwd()]:
        for candidate in candidates:
            if folder is not None and (folder / candidate).is_file():
                return folder / candidate
    return None


def recorded_inputs(prov: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Every recorded input of a provenance dict, resolved (see :func:`resolve_input`).

    Provenance written before inputs were recorded names its sources only (file names, or
    layer names as the demo writes them, ``"lesion ct"`` -> ``lesion_ct.nii.gz``): those are
    looked for beside the provenance file, unverified.
    """
    records = prov.get("inputs")
    if records is None:
        roles = LEGACY_ROLES.get(prov.get("kind", ""), ())
        records = {}
        for role, name in zip(roles, prov.get("sources", []), strict=False):
            found = _legacy_file(name, base)
            if found is None:
                raise XaimedError(
                    f"input {role} {name!r} is named in the provenance but no file of that name "
                    f"is beside it{'' if base is None else f' ({base})'}: put the input there "
                    "(or compute the output again with this version, which records input paths).")
            records[role] = {"name": name, "path": str(found)}
    return {role: resolve_input(role, record, base) for role, record in records.items()
            if record is not None}


def _need(inputs: dict[str, Any], *roles: str) -> list[Any]:
    missing = [role for role in roles if role not in inputs]
    if missing:
        raise XaimedError(f"the provenance records no {' or '.join(missing)} input: it cannot be "
                          "rerun; compute the output again with this version.")
    return [inputs[role] for role in roles]


# ------------------------------------------------------------------------------ recompute

def _segmentation(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed._core.progress import run_steps
    from napari_xaimed.models.recorded import recorded_model
    from napari_xaimed.segmentation import segment_steps
    from napari_xaimed.segmentation.run import method_params

    (image,) = _need(inputs, "image")
    params = dict(prov["params"])
    method = params.pop("method")
    kwargs = {k: v for k, v in params.items()
              if k in method_params(method) and k not in ("mask", "trust")}
    if method == "model":  # loaded here: unchanged, and its code run only with trust
        kwargs["model"] = recorded_model((prov.get("facts") or {}).get("model"), trust,
                                         kwargs.get("model"))
    if "mask" in inputs:
        kwargs["mask"] = inputs["mask"].data
    elif params.get("mask") is not None:
        _need(inputs, "mask")
    result = run_steps(segment_steps(image.data, method, spacing=image.spacing,
                                     **as_tuples(kwargs)))
    if prov["kind"] == "class probability":
        return result.probabilities[int(prov["class"]) - 1]
    if prov["kind"] == "foreground probability":
        return result.probabilities[0]
    return result.labels


def _evaluation(prov: dict[str, Any], inputs: dict[str, Any]) -> np.ndarray:
    from napari_xaimed.evaluation import evaluate
    from napari_xaimed.evaluation.errors import class_layers

    reference, prediction = _need(inputs, "reference", "prediction")
    result = evaluate(reference.data, prediction.data, spacing=reference.spacing,
                      keep_maps=True, **prov["params"])
    name = prov.get("class")
    output = prov.get("output", "error_map")
    if output not in ("error_map", "missed_map", "region_map"):
        raise XaimedError(f"unknown evaluation output {output!r}.")
    if name is None and "class" in prov and output != "region_map":
        members = list(result.classes.values())  # one layer for all classes (per label value)
    else:
        members = [result.classes[name] if name in result.classes else next(
            iter(result.classes.values()))]
    if output == "region_map":
        return members[0].region_map
    errors, missed, _ = class_layers(members)
    return errors if output == "error_map" else missed


def registration_result(prov: dict[str, Any], inputs: dict[str, Any]) -> Any:
    """The :class:`~napari_xaimed.registration.RegistrationResult` a registration provenance
    describes, computed again."""
    from napari_xaimed.registration import register
    from napari_xaimed.registration.params import TUNABLE
    from napari_xaimed.registration.run import register_steps

    fixed, moving = _need(inputs, "fixed", "moving")
    params = accepted(register_steps, prov["params"], TUNABLE)
    for key in (*REGISTRATION_EXTRAS, "fixed", "moving", "fixed_spacing", "moving_spacing",
                "fixed_origin", "moving_origin", "transforms_dir"):
        params.pop(key, None)
    extras = {role: getattr(inputs[role], "data", inputs[role])
              for role in REGISTRATION_EXTRAS if role in inputs}
    return register(fixed.data, moving.data, fixed_spacing=fixed.spacing,
                    moving_spacing=moving.spacing, fixed_origin=fixed.origin,
                    moving_origin=moving.origin, **as_tuples(params), **extras)


REGISTRATION_OUTPUTS = ("displacement", "jacobian", "folded", "grid", "warped")


def _registration(prov: dict[str, Any], inputs: dict[str, Any], name: str) -> np.ndarray:
    output = prov.get("output")
    if output is None:  # the CLI names its files after them: warped.nii.gz, jacobian.nii.gz...
        stem = name.lower()
        output = next((o for o in REGISTRATION_OUTPUTS if o in stem), "warped")
    result = registration_result(prov, inputs)
    if output == "displacement":
        return np.moveaxis(result.displacement, -1, 0)  # as written: components first
    if output == "grid":
        return result.grid(float(prov["params"].get("grid_mm", 5.0)))
    return getattr(result, output)


def _carried(prov: dict[str, Any], inputs: dict[str, Any], base: Path | None) -> np.ndarray:
    (layer,) = _need(inputs, "layer")
    registration = prov.get("registration")
    if registration is None:
        raise XaimedError("this carried-along layer's provenance does not record its "
                          "registration: carry it along again with this version, then save it.")
    result = registration_result(registration, recorded_inputs(registration, base))
    return result.apply(layer.data, prov["params"]["interpolation"])


def _attribution(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed.attribution import METHODS, attribute
    from napari_xaimed.models.recorded import recorded_model

    (image,) = _need(inputs, "image")
    params = dict(prov["params"])
    method = params["method"]
    keep = (*METHODS[method].params, "preprocessing", "batch_size", "autocast", "seed",
            "spacing")
    kwargs = {k: v for k, v in params.items() if k in keep}
    if "target_index" in params and params.get("target") != "predicted":
        kwargs["target"] = params["target_index"]
    elif "channel" in params:
        kwargs["target"] = params["channel"]
    if params.get("region") == "given mask":
        kwargs["region"] = _need(inputs, "region")[0].data
    model = recorded_model(prov["model"], trust)
    result = attribute(model, image.data, method, device=prov.get("device", "auto"),
                       **as_tuples(kwargs))
    return result.map


#: Which array of a LongitudinalResult each output of the longitudinal widget is.
LONGITUDINAL_OUTPUTS = {"current": "current", "carried prior": "carried_prior",
                        "change": "change", "normalised change": "change_normalised",
                        "feature change": "feature_change"}


def _longitudinal(prov: dict[str, Any], inputs: dict[str, Any], trust: bool) -> np.ndarray:
    from napari_xaimed.attribution import METHODS, explain_change
    from napari_xaimed.models.recorded import recorded_model
    from napari_xaimed.registration.params import TUNABLE

    prior, current = _need(inputs, "prior", "current")
    params = prov["params"]
    method = params["method"]
    method_params = {k: v for k, v in params.get("method_params", {}).items()
                     if k in METHODS[method].params and k != "layer"}
    registered = params["registration"]
    if str(registered.get("source", "")).startswith("identity"):
        alignment: dict[str, Any] = {"registration": "identity"}
    elif registered.get("source") == "registered here":
        done = registered["params"]
        alignment = {"transform": registered["transform"], "seed": done.get("seed"),
                     "registration_params": as_tuples(
                         {k: v for k, v in done.items() if k in (*TUNABLE, "threads")})}
    else:
        raise XaimedError("this longitudinal output used a registration or field given in a "
                          "script: it cannot be rerun from its provenance alone.")
    output = prov.get("output", "change")
    if output not in LONGITUDINAL_OUTPUTS:
        raise XaimedError(f"unknown longitudinal output {output!r}.")
    model = recorded_model(prov["model"], trust)
    result = explain_change(prior.data, current.data, model, method=method,
                            spacing=current.spacing, origin=current.origin,
                            prior_spacing=prior.spacing, prior_origin=prior.origin,
                            target=params["target"], layer=params["layer"],
                            device=prov.get("device", "auto"), **alignment,
                            **as_tuples(method_params))
    return getattr(result, LONGITUDINAL_OUTPUTS[output])


def recompute(prov: dict[str, Any], base: Path | None = None, name: str = "",
              trust: bool = False) -> np.ndarray:
    """Compute the output a provenance dict describes again, from its recorded inputs.

    Parameters
    ----------
    prov : dict
        An output's ``metadata["xaimed"]`` or its JSON sidecar.
    base : pathlib.Path, optional
        The folder of the provenance file: inputs named there are looked for in it too.
    name : str
        The output's file name, which says which output of a CLI registration it is.
    trust : bool
        Run the code the model file names (a record of a trusted load needs it again).

    Raises
    ------
    XaimedError
        If an input or the model is missing, was never saved, or has changed, or the kind
        cannot be rerun.
    """
    kind = prov.get("kind")
    if "lazy" in prov or "lazy" in (prov.get("registration") or {}):
        # an in-memory rerun would read the whole volumes and register them at full size:
        # a different computation from the one recorded
        raise XaimedError(
            f"this {kind} output was computed on downsampled copies of lazy (larger than "
            "memory) layers, which rerun does not redo yet: run "
            "napari_xaimed.registration.register_lazy (or the widget) again with the "
            "recorded parameters and factors (provenance 'lazy').")
    inputs = recorded_inputs(prov, base) if kind != "registration-apply" else {
        role: resolve_input(role, record, base)
        for role, record in (prov.get("inputs") or {}).items()}
    if kind in ("segmentation", "class probability", "foreground probability"):
        return _segmentation(prov, inputs, trust)
    if kind == "panoptic evaluation":
        return _evaluation(prov, inputs)
    if kind == "registration":
        return _registration(prov, inputs, name)
    if kind == "registration-apply":
        return _carried(prov, inputs, base)
    if kind == "attribution":
        return _attribution(prov, inputs, trust)
    if kind == "longitudinal attribution":
        return _longitudinal(prov, inputs, trust)
    if kind in ("sample", "truth"):
        return _sample_data({"name": name, "sample": {"kind": kind, "params": prov["params"]}})
    raise XaimedError(
        f"outputs of kind {kind!r} cannot be rerun: rerun knows segmentation, class and "
        "foreground probabilities, panoptic evaluation, registration (and layers carried "
        "along), attribution and longitudinal attribution.")


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

