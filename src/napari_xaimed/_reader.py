"""npe2 reader contribution: NIfTI files open as Image or Labels layers scaled in mm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_xaimed._layers import LayerTuple, image_layer, labels_layer
from napari_xaimed.io import is_nifti_path, read_volume, sidecar_path


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerTuple]] | None:
    """Return the NIfTI reader when every path is a ``.nii``/``.nii.gz`` file, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(is_nifti_path(p) for p in paths):
        return None
    return read_nifti


def layer_name(path: str | Path) -> str:
    """The file name without its NIfTI extension, like napari names other files."""
    return sidecar_path(path).stem


def read_nifti(path: str | list[str]) -> list[LayerTuple]:
    """Read one or several NIfTI files into layer data tuples.

    Label-like files (NIfTI intent ``label``, or non-negative integers that look like classes)
    become Labels layers; the rest Image layers. ``scale`` is the spacing in mm; the file's affine
    and provenance ride along in ``metadata`` so writing the layer back restores them.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers = []
    for p in paths:
        volume = read_volume(p)
        extra = {"nifti": {"path": str(volume.path), "affine": volume.affine.tolist()}}
        make = labels_layer if volume.is_label else image_layer
        layers.append(
            make(
                volume.data,
                layer_name(p),
                volume.spacing,
                provenance=volume.metadata or None,
                metadata=extra,
            )
        )
    return layers
