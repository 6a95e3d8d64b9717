"""The inputs a provenance record names, found again: files by path and hash, the samples by
their generator and seed, and the names older records used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import array_sha256
from napari_xaimed.io import is_nifti_path, read_volume

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
    #: The file's affine for ``data`` as found (after the recorded reorientation), whose
    #: directions an output on this grid is written with; None: identity (samples).
    affine: np.ndarray | None = None


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


def resolve_input(role: str, record: dict[str, Any], base: Path | None = None,
                  path: str | Path | None = None) -> Any:
    """The voxels (or points) of one recorded input, checked against its SHA-256.

    A recorded path that no longer exists is also looked for beside the provenance file
    (``base``), so a folder of outputs and inputs can move. ``path`` reads another file
    instead (a saved script's argument): its own voxels and geometry, nothing checked.
    """
    if path is not None:
        volume = read_volume(path)
        return Input(name=Path(path).name, data=volume.data, spacing=tuple(volume.spacing),
                     origin=tuple(volume.translate), affine=volume.affine)
    name = record.get("name", role)
    if "points_world_mm" in record:
        return np.asarray(record["points_world_mm"], dtype=np.float64).reshape(-1, 3)
    spacing, origin = record.get("spacing"), record.get("origin")
    affine = None
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
        data, where, affine = volume.data, str(path), volume.affine
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
        from nibabel.orientations import inv_ornt_aff

        from napari_xaimed.io.grid import reorient  # (spacing and origin recorded as used)

        if affine is not None:  # as nibabel's as_reoriented: every voxel keeps its position
            affine = affine @ inv_ornt_aff(np.asarray(record["orientation"]), data.shape[::-1])
        data = reorient(data, (1.0, 1.0, 1.0), record["orientation"])[0]
    spacing = tuple(float(s) for s in (spacing or (1.0, 1.0, 1.0)))
    origin = None if origin is None else tuple(float(o) for o in origin)
    return Input(name=name, data=data, spacing=spacing, origin=origin,  # type: ignore[arg-type]
                 affine=affine)


def _legacy_file(name: str, base: Path | None) -> Path | None:
    from napari_xaimed.cli._common import layer_file_stem

    candidates = [name] if is_nifti_path(name) else [
        f"{layer_file_stem(name)}.nii.gz", f"{name}.nii.gz", f"{name}.nii",
        f"{layer_file_stem(name)}.nii"]
    folders = [base, base.parent] if base is not None else []
    for folder in [*folders, Path.cwd()]:
        for candidate in candidates:
            if folder is not None and (folder / candidate).is_file():
                return folder / candidate
    return None


def input_records(prov: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The input records of a provenance dict, by role.

    Provenance written before inputs were recorded names its sources only (file names, or
    layer names as the demo writes them, ``"lesion ct"`` -> ``lesion_ct.nii.gz``): those are
    looked for beside the provenance file (``base``) and recorded by path, unverified.
    """
    records = prov.get("inputs")
    if records is not None:
        return {role: record for role, record in records.items() if record is not None}
    roles = LEGACY_ROLES.get(prov.get("kind", ""), ())
    found_records = {}
    for role, name in zip(roles, prov.get("sources", []), strict=False):
        found = _legacy_file(name, base)
        if found is None:
            raise XaimedError(
                f"input {role} {name!r} is named in the provenance but no file of that name "
                f"is beside it{'' if base is None else f' ({base})'}: put the input there "
                "(or compute the output again with this version, which records input paths).")
        found_records[role] = {"name": name, "path": str(found)}
    return found_records


def recorded_inputs(prov: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Every recorded input of a provenance dict (:func:`input_records`), resolved (see
    :func:`resolve_input`)."""
    return {role: resolve_input(role, record, base)
            for role, record in input_records(prov, base).items()}


def _need(inputs: dict[str, Any], *roles: str) -> list[Any]:
    missing = [role for role in roles if role not in inputs]
    if missing:
        raise XaimedError(f"the provenance records no {' or '.join(missing)} input: it cannot be "
                          "rerun; compute the output again with this version.")
    return [inputs[role] for role in roles]
