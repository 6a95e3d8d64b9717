"""Provenance: what every output carries so a result can be traced and rerun."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples and sets into JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)  # JSON has no inf/nan
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
