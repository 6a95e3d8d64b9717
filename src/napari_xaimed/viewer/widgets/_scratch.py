"""Scratch folders for the widgets' outputs on lazy layers, deleted when nothing shows them.

A widget run on a volume larger than memory writes its output (labels, a warped image, a
heatmap) slab by slab into a Zarr store and shows it as a dask layer reading that store. Each
run gets its own folder under ``$XAIMED_SCRATCH`` (default: the system's temporary folder; point
it at a large disk, since ``/tmp`` is often in memory). A folder is deleted

- when the job that was to fill it fails or is cancelled (see ``JobPanel.start``),
- when the last layer reading it leaves the viewer, or is overwritten in place by a rerun,
- when Python exits.

Keep an output by saving the layer (napari's File > Save Selected Layers) or, in a script,
``napari_xaimed.io.lazy.write_zarr(path, layer.data, spacing)``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

#: environment variable naming the folder under which scratch folders are made
SCRATCH_ENV = "XAIMED_SCRATCH"

_folders: set[Path] = set()  # made by this session and not deleted yet
_shown: dict[int, tuple[weakref.ref, Path]] = {}  # id(layer) -> (the layer, its folder)
_watched: set[int] = set()  # id() of the layer lists whose removals are watched


def scratch_folder(prefix: str) -> Path:
    """A new empty folder for one run's output stores, under ``$XAIMED_SCRATCH``.

    Parameters
    ----------
    prefix : str
        Start of the folder's name, e.g. ``"xaimed-labels-"``.

    Returns
    -------
    Path
        The folder; :func:`discard` deletes it, :func:`keep_while_shown` ties it to layers.
    """
    base = os.environ.get(SCRATCH_ENV) or None
    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    _folders.add(folder)
    return folder


def discard(folder: Path | None) -> None:
    """Delete a scratch folder made by :func:`scratch_folder` (others are never touched)."""
    if folder is None or folder not in _folders:
        return
    _folders.discard(folder)
    shutil.rmtree(folder, ignore_errors=True)


def keep_while_shown(viewer: Any, layer: Any, folder: Path | None) -> None:
    """Keep ``folder`` while ``layer`` (which reads a store in it) is in the viewer.

    When the layer read another scratch folder before (a rerun updated it in place), that
    folder is deleted once no other layer reads it; ``folder=None`` says that the layer now
    holds its data in memory.
    """
    previous = _shown.pop(id(layer), None)
    if folder is not None:
        _shown[id(layer)] = (weakref.ref(layer), folder)
        layers = viewer.layers
        if id(layers) not in _watched:
            _watched.add(id(layers))
            layers.events.removed.connect(_on_removed)
    if previous is not None:
        release(previous[1])


def _on_removed(event: Any) -> None:
    entry = _shown.pop(id(event.value), None)
    if entry is not None:
        release(entry[1])


def release(folder: Path | None) -> None:
    """Delete ``folder`` (a scratch folder) unless a live layer still reads it."""
    if folder is None:
        return
    for ref, other in list(_shown.values()):
        if other == folder and ref() is not None:
            return
    discard(folder)


@atexit.register
def _discard_all() -> None:
    for folder in list(_folders):
        discard(folder)
