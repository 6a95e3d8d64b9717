"""File > IO Utilities > "Save layer as a Python script": the script that computes the selected
output layer again (:func:`napari_xaimed.cli.script.script_text`), written into a folder with
the inputs that exist only in the viewer saved beside it as NIfTI.

A viewer command in ``cli``: the rerun machinery it writes from reads samples through
``viewer``, so it sits above it (the ``layers`` contract of docs/architecture.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import napari
import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.provenance import array_sha256


def _in_memory(records: dict[str, Any]) -> list[dict[str, Any]]:
    """The input records that name no file and no sample (points carry their own values)."""
    return [r for r in records.values() if r is not None and not r.get("path")
            and not r.get("sample") and "points_world_mm" not in r]


def _save_input(record: dict[str, Any], layers: Any, folder: Path) -> None:
    """Write the viewer layer a record names (the same name and voxels) into ``folder`` and
    point the record at that file."""
    from napari_xaimed.cli._common import layer_file_stem
    from napari_xaimed.io import affine_from_grid, read_volume, write_volume

    name = record.get("name")
    layer = next((layer for layer in layers if layer.name == name), None)
    if layer is None or (record.get("sha256") is not None
                         and array_sha256(np.asarray(layer.data)) != record["sha256"]):
        raise XaimedError(
            f"the input {name!r} was a layer with no file and is "
            + ("no longer in the viewer" if layer is None else "changed since")
            + ": a script could not read it; compute the output again from a saved input.")
    path = folder / f"{layer_file_stem(name)}.nii.gz"
    spacing = record.get("spacing") or tuple(layer.scale[-3:])
    origin = record.get("origin") or tuple(layer.translate[-3:])
    # the layer's rotation: napari's world is (S, A, R) over (z, y, x), a NIfTI's RAS over
    # (x, y, z), so its spatial block read backwards on both axes
    rotation = np.asarray(layer.affine.affine_matrix, dtype=float)[-4:-1, -4:-1][::-1, ::-1]
    write_volume(path, np.asarray(layer.data),
                 affine=affine_from_grid(spacing, origin, template=rotation),
                 is_label=type(layer).__name__ == "Labels")
    if record.get("sha256") is not None and array_sha256(read_volume(path).data) != \
            record["sha256"]:
        raise XaimedError(f"the input {name!r} does not read back from NIfTI as the same voxels "
                          f"(its type {np.asarray(layer.data).dtype} is not kept): save it in "
                          "a NIfTI type (e.g. float32) and compute the output from that file.")
    record["path"] = str(path.resolve())


def save_layer_script(layer: Any, folder: str | Path, layers: Any = (),
                      trust: bool = False) -> Path:
    """Write the script that computes ``layer`` again into ``folder``.

    Parameters
    ----------
    layer : napari.layers.Layer
        An output layer of the plugin (its provenance in ``metadata["xaimed"]``).
    folder : str or pathlib.Path
        Where the script goes; inputs that are in-memory layers (no file, not a sample) are
        saved there as NIfTI from ``layers`` and read by the script from there.
    layers : sequence of napari layers
        The viewer's layers, where such inputs are found by name and checked by SHA-256.
    trust : bool
        See :func:`napari_xaimed.cli.script.script_text`.

    Returns
    -------
    pathlib.Path
        The script written, ``<layer name>.py``.
    """
    from napari_xaimed.cli._common import layer_file_stem
    from napari_xaimed.cli.script import script_text

    prov = copy.deepcopy((getattr(layer, "metadata", None) or {}).get("xaimed"))
    if not prov or "kind" not in prov:
        raise XaimedError(f"the layer {layer.name!r} has no napari-xaimed provenance: only "
                          "outputs of the plugin's widgets can be saved as a script.")
    folder = Path(folder)
    text = script_text(prov, layer.name, trust=trust)  # refuse an unscriptable kind first
    records = {**(prov.get("inputs") or {}),
               **((prov.get("registration") or {}).get("inputs") or {})}
    pending = _in_memory(records)
    if pending:
        folder.mkdir(parents=True, exist_ok=True)
        for record in pending:
            _save_input(record, layers, folder)
        text = script_text(prov, layer.name, trust=trust)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{layer_file_stem(layer.name)}.py"
    target.write_text(text)
    return target


def save_as_script(layer: napari.layers.Layer, viewer: napari.viewer.Viewer) -> None:
    """The menu command: ask for a folder and write the selected layer's script there."""
    from napari.utils.notifications import show_error, show_info
    from qtpy.QtWidgets import QFileDialog

    if layer is None:
        show_error("Select an output layer of napari-xaimed to save as a script.")
        return
    start = next((str(Path(r["path"]).parent) for r in
                  ((layer.metadata.get("xaimed") or {}).get("inputs") or {}).values()
                  if r and r.get("path")), str(Path.cwd()))
    folder = QFileDialog.getExistingDirectory(None, "Folder for the script", start)
    if not folder:
        return
    try:
        written = save_layer_script(layer, folder, list(viewer.layers))
    except XaimedError as exc:
        show_error(str(exc))
        return
    show_info(f"Wrote {written}: run it with python {written.name}")
