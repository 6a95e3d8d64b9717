"""npe2 writer contributions: Image and Labels layers to NIfTI, NRRD or MetaImage.

The file name's suffix picks the format (``.nii.gz`` when it has none of ours); a JSON
provenance sidecar goes beside the file. The orientation comes from the file the layer was read
from, else from the layer's ``affine`` (the direction cosines an output took from its source,
see :mod:`napari_xaimed.viewer.orientation`); a file whose axes the reader permuted is written
back in its own axis order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io import VOLUME_SUFFIXES, affine_from_grid, grid_translate, write_volume


def _affine_for(meta: dict[str, Any], ndim: int) -> tuple[tuple[float, ...], np.ndarray]:
    """Spacing from the layer's scale, and an affine placing the voxels where the layer is.

    The file's own affine (kept in the layer metadata by the reader) gives the orientation when
    its voxel size still fits the layer's scale; the origin follows the layer's ``translate``,
    so a layer moved in the viewer is saved where it was moved to.
    """
    scale = tuple(float(s) for s in meta.get("scale", (1.0,) * ndim))[-3:]
    translate = tuple(float(t) for t in meta.get("translate", (0.0,) * ndim))[-3:]
    stored = (meta.get("metadata") or {}).get("nifti", {}).get("affine")
    if stored is not None:
        affine = np.asarray(stored, dtype=float)
        if np.allclose(np.linalg.norm(affine[:3, :3], axis=0)[::-1], scale, rtol=1e-4):
            if np.allclose(grid_translate(affine), translate, rtol=1e-6, atol=1e-5):
                return scale, affine  # unchanged: exactly the file's matrix
            return scale, affine_from_grid(scale, translate, template=affine)
    return scale, affine_from_grid(scale, translate, template=_layer_directions(meta))


def _layer_directions(meta: dict[str, Any]) -> np.ndarray | None:
    """A NIfTI-convention template of the layer's own ``affine`` (voxel ``(z, y, x)`` to world
    ``(S, A, R)``), None when it has none."""
    matrix = meta.get("affine")
    matrix = getattr(matrix, "affine_matrix", matrix)
    if matrix is None:
        return None
    spatial = np.asarray(matrix, dtype=float)[-4:-1, -4:-1]
    template = np.eye(4)
    template[:3, :3] = spatial[::-1, ::-1]  # back to (i, j, k) -> RAS
    return template


def _file_axes(data: Any, spacing: tuple[float, ...], affine: np.ndarray, ornt: Any
               ) -> tuple[Any, tuple[float, ...], np.ndarray]:
    """Undo the reader's axis permutation (``metadata["nifti"]["orientation"]``): the voxels,
    spacing and affine in the order of the file the layer came from."""
    targets = [int(t) for t in np.asarray(ornt)[:, 0]]  # old (i, j, k) axis a -> new targets[a]
    zyx = [2 - targets[2 - m] for m in range(3)]  # old (z, y, x) axis m <- new axis zyx[m]
    extra = data.ndim - 3
    affine = affine.copy()
    affine[:, :3] = affine[:, targets]
    return (data.transpose(*range(extra), *(extra + a for a in zyx)),
            tuple(spacing[a] for a in zyx), affine)


def _write(path: str, data: Any, meta: dict[str, Any], is_label: bool) -> list[str]:
    data = np.asarray(data)
    if data.ndim < 3:
        raise XaimedError(
            f"Volume export needs a 3D layer, {meta.get('name', 'this layer')!r} is {data.ndim}D."
        )
    if not str(path).lower().endswith(VOLUME_SUFFIXES):
        path = f"{path}.nii.gz"
    spacing, affine = _affine_for(meta, data.ndim)
    ornt = (meta.get("metadata") or {}).get("nifti", {}).get("orientation")
    if ornt is not None:
        data, spacing, affine = _file_axes(data, spacing, affine, ornt)
    provenance = (meta.get("metadata") or {}).get("xaimed")
    written = write_volume(
        Path(path), data, spacing, affine, is_label=is_label, metadata=provenance
    )
    return [str(p) for p in written]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (intensities or a heatmap) to NIfTI, NRRD or MetaImage."""
    return _write(path, data, meta, is_label=False)


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer, marked as a label map (NIfTI intent ``label``), with its label
    names (see :func:`layer_label_names`) in a ``<stem>.labels.json`` sidecar beside it, which
    :func:`~napari_xaimed.io.read_volume` reads back."""
    from napari_xaimed.io.label_names import write_sidecar

    written = _write(path, data, meta, is_label=True)
    names = layer_label_names(meta)
    if names:
        written.append(str(write_sidecar(written[0], names)))
    return written


def layer_label_names(meta: dict[str, Any]) -> dict[int, str]:
    """A Labels layer's names of its values (the background, 0, left out): its ``features``'
    ``name`` column (by the ``index`` or ``label`` column, else the row number), over
    ``metadata["segments"]`` (a DICOM-SEG's, as the reader keeps them)."""
    import pandas as pd

    segments = (meta.get("metadata") or {}).get("segments") or {}
    names = {int(v): str(n) for v, n in segments.items()}
    features = meta.get("features")
    if features is not None and len(features):
        table = pd.DataFrame(features)
        if "name" in table.columns:
            key = next((c for c in ("index", "label") if c in table.columns), None)
            values = table[key] if key else table.index
            names.update({int(v): str(n) for v, n in zip(values, table["name"], strict=True)
                          if not pd.isna(n) and str(n).strip()})
    names.pop(0, None)
    return names
