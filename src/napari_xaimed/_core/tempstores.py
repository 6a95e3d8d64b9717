"""Temporary folders for stores that a returned dask array still reads.

A lazy function given no ``out`` writes its result into a temporary folder and returns a dask
array over it, so the folder cannot go when the function returns. It is removed when Python
exits (or earlier by the caller, who finds its path in the result's provenance); everything
else a run puts in a temporary folder is removed when the run ends.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

_KEPT: set[Path] = set()


def make_folder(prefix: str, workdir: str | Path | None = None) -> Path:
    """A new empty folder under ``workdir`` (default: the system's temporary folder)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=None if workdir is None else str(workdir)))


def remove_at_exit(folder: Path) -> None:
    """Remove ``folder`` when Python exits (if it is still there)."""
    _KEPT.add(Path(folder))


@atexit.register
def remove_kept() -> None:
    """Remove every folder passed to :func:`remove_at_exit` (run at exit)."""
    for folder in list(_KEPT):
        shutil.rmtree(folder, ignore_errors=True)
        _KEPT.discard(folder)
