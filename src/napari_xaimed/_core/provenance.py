"""Provenance: what every output carries so a result can be traced and rerun."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np


def _plain(value: Any, nonfinite_as_null: bool = False) -> Any:
    """Turn numpy scalars/arrays, tuples and sets into JSON-friendly Python values. JSON has no
    inf/nan: they become ``"nan"``/``"inf"`` text, or null with ``nonfinite_as_null`` (for
    tables read back as numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v, nonfinite_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, nonfinite_as_null) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v, nonfinite_as_null) for v in value)
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), nonfinite_as_null) if nonfinite_as_null else value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if nonfinite_as_null else str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def provenance(
    kind: str,
    *,
    sources: Sequence[str] = (),
    params: dict[str, Any] | None = None,
    seconds: float | None = None,
    device: str = "cpu",
    **extra: Any,
) -> dict[str, Any]:
    """The ``metadata["xaimed"]`` dict of an output layer (and its JSON sidecar).

    Parameters
    ----------
    kind : str
        What the result is, e.g. ``"segmentation"``, ``"heatmap"``, ``"displacement"``.
    sources : sequence of str
        Names of the input layers or files.
    params : dict
        Every parameter the computation used, so it can be rerun.
    seconds : float, optional
        Wall time of the computation.
    device : str
        Where it ran (``"cpu"``, ``"cuda:0"``, ...).
    **extra
        Anything else worth keeping (e.g. a model file's SHA-256).

    Returns
    -------
    dict
        JSON-serialisable.
    """
    from napari_xaimed import __version__

    record = {
        "kind": kind,
        "sources": list(sources),
        "params": params or {},
        "version": __version__,
        "seconds": None if seconds is None else round(float(seconds), 4),
        "device": device,
        "python": platform.python_version(),
        **extra,
    }
    record = _plain(record)
    json.dumps(record)  # fail here, not when the layer is saved
    return record


def file_sha256(path: Any) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def array_sha256(data: Any) -> str:
    """SHA-256 of an array's values (C order), its dtype and shape: the same voxels give the
    same digest whichever file or layer they came from."""
    import hashlib

    arr = np.ascontiguousarray(np.asarray(data))
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def input_record(
    name: str,
    data: Any,
    *,
    path: str | None = None,
    sample: dict[str, Any] | None = None,
    spacing: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
    sha256: bool = True,
) -> dict[str, Any]:
    """What a rerun needs to find one input again and to know it is unchanged.

    ``path`` (a NIfTI file) or ``sample`` (the sample generator's provenance) says where the
    voxels come from; ``sha256`` (:func:`array_sha256`) and ``shape`` say which voxels they
    were; ``spacing`` and ``origin`` (mm, ``(z, y, x)``) are the geometry the computation used,
    which may differ from the file's when a layer's scale or translate was changed.
    ``sha256=False`` leaves the digest out (None) for :class:`PendingInputs` to fill later.
    """
    arr = np.asarray(data) if sha256 else data
    record: dict[str, Any] = {
        "name": name, "path": None if path is None else str(path), "sample": sample,
        "shape": list(arr.shape), "dtype": np.dtype(arr.dtype).str,
        "sha256": array_sha256(arr) if sha256 else None,
    }
    if spacing is not None:
        record["spacing"] = [float(s) for s in spacing]
    if origin is not None:
        record["origin"] = [float(o) for o in origin]
    return _plain(record)


def file_input(path: str | Any, volume: Any) -> dict[str, Any]:
    """:func:`input_record` of a NIfTI file read by ``io.read_volume`` (absolute path), with
    its spacing and origin (napari ``translate``); a volume opened lazily is not hashed (that
    would read it whole)."""
    from pathlib import Path

    from napari_xaimed._core.arrays import is_lazy

    return input_record(Path(path).name, volume.data, path=str(Path(path).resolve()),
                        spacing=volume.spacing, origin=volume.translate,
                        sha256=not is_lazy(volume.data))


def layer_input(layer: Any, *, sha256: bool = True) -> dict[str, Any] | None:
    """:func:`input_record` of a napari layer (None for None): the NIfTI file it was read
    from (``metadata["nifti"]["path"]``), or the sample it was generated as, and the scale and
    translate of its last three axes. Points layers keep their points (world mm) instead."""
    if layer is None:
        return None
    meta = getattr(layer, "metadata", {}) or {}
    scale = [float(s) for s in layer.scale[-3:]]
    translate = [float(t) for t in layer.translate[-3:]]
    if type(layer).__name__ == "Points":
        points = np.asarray(layer.data, dtype=np.float64)[:, -3:] * scale + translate
        return _plain({"name": layer.name, "points_world_mm": points})
    path = (meta.get("nifti") or {}).get("path")
    prov = meta.get("xaimed") or {}
    sample = None
    if prov.get("kind") in ("sample", "truth") and "generator" in prov.get("params", {}):
        sample = {"kind": prov["kind"], "params": prov["params"]}
    record = input_record(layer.name, file_order(layer), path=path, sample=sample,
                          spacing=scale, origin=translate, sha256=sha256)
    ornt = (meta.get("nifti") or {}).get("orientation")
    return record if ornt is None or not path else {**record, "orientation": ornt}


def file_order(layer: Any) -> Any:
    """A layer's voxels in the axis order of the file it was read from: the napari reader
    permutes a file's axes toward (S, A, R) (``metadata["nifti"]["orientation"]``, a view);
    a rerun reads the file and permutes it the same way."""
    meta = getattr(layer, "metadata", {}) or {}
    ornt = (meta.get("nifti") or {}).get("orientation") if isinstance(meta, dict) else None
    data = layer.data
    if ornt is None:
        return data
    targets = [int(t) for t in np.asarray(ornt)[:, 0]]
    extra = data.ndim - 3
    return data.transpose(*range(extra), *(extra + 2 - targets[2 - m] for m in range(3)))


def layer_inputs(**layers: Any) -> dict[str, Any]:
    """``{role: layer_input(layer)}`` for the layers given (None ones left out)."""
    return {role: layer_input(layer) for role, layer in layers.items() if layer is not None}


class PendingInputs:
    """Input records taken in the GUI thread, their SHA-256 computed later in the job's worker.

    Hashing a CT-sized layer takes about a second: done when the job starts, it would freeze
    the viewer. The records (name, file, geometry) are taken at once, so they describe the
    layers as the job got them; :meth:`complete` adds the digests of the very arrays the job
    reads, from the worker thread.
    """

    def __init__(self, **layers: Any) -> None:
        from napari_xaimed._core.arrays import is_lazy

        self.records: dict[str, Any] = {}
        self._arrays: dict[str, Any] = {}
        for role, layer in layers.items():
            if layer is None:
                continue
            self.records[role] = layer_input(layer, sha256=False)
            if is_lazy(getattr(layer, "data", None)):
                # a dask layer (larger than memory): its digest would read the whole volume
                self.records[role]["sha256_skipped"] = "lazy layer: not read whole to hash it"
            elif self.records[role].get("sha256", "") is None:
                self._arrays[role] = file_order(layer)

    def complete(self) -> dict[str, Any]:
        """Compute the missing digests (in the worker) and return the records."""
        for role, data in self._arrays.items():
            self.records[role]["sha256"] = array_sha256(data)
        self._arrays.clear()
        return self.records


def cli_inputs(**files: tuple[Any, Any]) -> dict[str, Any]:
    """``{role: file_input(path, volume)}`` for the ``(path, volume)`` pairs whose path is
    given: the inputs of a command-line run."""
    return {role: file_input(path, volume) for role, (path, volume) in files.items()
            if path is not None}
