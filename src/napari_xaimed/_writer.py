"""npe2 writer contributions: Image and Labels layers to NIfTI with a JSON provenance sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._errors import XaimedError
from napari_xaimed.io import write_volume


def _affine_for(meta: dict[str, Any], ndim: int) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing from the layer's scale, and the file's own affine when it still fits that scale."""
    scale = tuple(float(s) for s in meta.get("scale", (1.0,) * ndim))[-3:]
    translate = tuple(float(t) for t in meta.get("translate", (0.0,) * ndim))[-3:]
    stored = (meta.get("metadata") or {}).get("nifti", {}).get("affine")
    if stored is not None:
        affine = np.asarray(stored, dtype=float)
        if np.allclose(np.linalg.norm(affine[:3, :3], axis=0)[::-1], scale, rtol=1e-4):
            return scale, affine
    affine = np.diag([scale[2], scale[1], scale[0], 1.0])
    affine[:3, 3] = translate[::-1]
    return scale, affine


def _write(path: str, data: Any, meta: dict[str, Any], is_label: bool) -> list[str]:
    data = np.asarray(data)
    if data.ndim < 3:
        raise XaimedError(
            f"NIfTI export needs a 3D layer, {meta.get('name', 'this layer')!r} is {data.ndim}D."
        )
    if not str(path).lower().endswith((".nii", ".nii.gz")):
        path = f"{path}.nii.gz"
    spacing, affine = _affine_for(meta, data.ndim)
    provenance = (meta.get("metadata") or {}).get("xaimed")
    written = write_volume(
        Path(path), data, spacing, affine, is_label=is_label, metadata=provenance
    )
    return [str(p) for p in written]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (intensities or a heatmap) to NIfTI."""
    return _write(path, data, meta, is_label=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer to NIfTI, marked with the ``label`` intent."""
    return _write(path, data, meta, is_label=True)
