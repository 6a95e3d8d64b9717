"""From label maps to compact instance maps, one per evaluated class."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.components.memory import (  # noqa: F401 - also importable from here, as before
    _number_dtype,
    connected_components,
    value_components,
)


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber the nonzero ids of ``labels`` to ``1..n`` (in increasing id order).

    Returns the renumbered map (uint16 when n < 65536, else int32) and the original ids
    (``ids[k - 1]`` is the id of ``k``).
    A lookup table does it in one pass when the ids are small; ``np.unique`` otherwise.
    """
    flat = labels.ravel()
    if flat.size == 0:
        return np.zeros(labels.shape, np.int32), np.zeros(0, np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and hi < 4 * flat.size + 1024:
        present = np.bincount(flat, minlength=hi + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        dtype = np.uint16 if ids.size < 2**16 else np.int32  # small maps: less memory
        lut = np.zeros(hi + 1, dtype)
        lut[ids] = np.arange(1, ids.size + 1, dtype=dtype)
        return lut[labels], ids.astype(np.int64)
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        compact = inverse.astype(np.int32)
        ids = ids[1:]
    else:
        compact = (inverse + 1).astype(np.int32)
        compact[flat == 0] = 0
    return compact.reshape(labels.shape), ids.astype(np.int64)


def check_signs(labels: np.ndarray, name: str) -> None:
    """Raise the error a user can fix when a label map (or values read from it) holds negative
    labels; unsigned maps are not read."""
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger):
        lowest = labels.min()
        if lowest < 0:
            raise XaimedError(f"{name} has negative labels ({lowest}): labels must be >= 0.")


def compact_values(values: np.ndarray, selected: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Compact numbers of label values read at some voxels (e.g. the foreground of a map).

    The same numbering as :func:`compact_labels` of the whole map, from the values alone: the
    nonzero ids present become ``1..n`` in increasing id order and 0 stays 0.

    Parameters
    ----------
    values : numpy.ndarray
        Non-negative integer labels, any shape.
    selected : numpy.ndarray, optional
        Sorted ids that count as instances; other values are numbered 0 like the background.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The numbers (uint16 when n < 65536, else int32 or int64), shaped like ``values``, and
        the ``n`` ids (int64, ``ids[k - 1]`` is the id of ``k``).
    """
    flat = values.ravel()
    if flat.size == 0:
        return np.zeros(values.shape, np.uint16), np.zeros(0, np.int64)
    hi = int(flat.max())
    if hi < 4 * flat.size + 2**16:  # a lookup table no larger than a few times the values
        flat = flat.astype(np.intp, copy=False)
        present = np.bincount(flat, minlength=hi + 1) > 0
        present[0] = False
        if selected is not None:
            present &= np.isin(np.arange(hi + 1), selected)
        ids = np.flatnonzero(present)
        lut = np.zeros(hi + 1, _number_dtype(ids.size))
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat].reshape(values.shape), ids.astype(np.int64)
    unique, inverse = np.unique(flat, return_inverse=True)
    keep = unique != 0
    if selected is not None:
        keep &= np.isin(unique, selected)
    numbers = np.cumsum(keep) * keep
    dtype = _number_dtype(int(keep.sum()))
    return (numbers.astype(dtype)[inverse].reshape(values.shape),
            unique[keep].astype(np.int64))


def selected_values(values: Iterable[int] | None) -> np.ndarray | None:
    """Sorted unique int64 ids of a class (None stays None: every nonzero value)."""
    if values is None:
        return None
    return np.asarray(sorted(set(int(v) for v in values)), dtype=np.int64)


def label_values(*maps: np.ndarray) -> np.ndarray:
    """The sorted nonzero label values found in any of the given (non-negative) maps.

    A 0/1 map costs one pass (its maximum); others are counted a chunk at a time, so no
    temporary larger than a few MB is made."""
    found: set[int] = set()
    chunk = 1 << 20
    for labels in maps:
        flat = labels.reshape(-1)
        hi = int(flat.max()) if flat.size else 0
        if hi <= 1:
            found.update([hi] if hi else [])
            continue
        small = hi < 2**20  # a table of counts no larger than the chunk
        counts = np.zeros(hi + 1, np.int64) if small else None
        for start in range(0, flat.size, chunk):
            part = flat[start:start + chunk]
            if small:
                counts += np.bincount(part.astype(np.intp), minlength=hi + 1)
            else:
                found.update(np.unique(part[part != 0]).tolist())
        if small:
            found.update(np.flatnonzero(counts[1:]) + 1)
    return np.asarray(sorted(int(v) for v in found if v != 0), np.int64)


def class_instances(
    labels: np.ndarray,
    values: Iterable[int] | None,
    *,
    instance_input: bool,
    connectivity: int = 26,
    values_apart: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The compact instance map of one class and the ids its instances had.

    Parameters
    ----------
    labels : numpy.ndarray
        A semantic map (class values) or, with ``instance_input``, an instance map.
    values : iterable of int or None
        Label values that belong to the class; None means every nonzero value.
    instance_input : bool
        True: each selected value is one instance. False: instances are the connected
        components of the union of the selected values (ids in the result are component
        numbers).
    connectivity : {6, 18, 26}
    values_apart : bool
        Semantic input: the components of each selected value kept apart
        (:func:`value_components`), instead of the components of their union.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Map ``0..n`` (uint16 when n < 65536, else int32 or int64) and the ``n`` original ids
        (component numbers for semantic input).
    """
    values = selected_values(values)
    if instance_input:
        selected = labels if values is None else np.where(np.isin(labels, values), labels, 0)
        return compact_labels(selected)
    if values_apart:
        selected = labels if values is None else np.where(np.isin(labels, values), labels, 0)
        components, n = value_components(selected, connectivity)
        return components, np.arange(1, n + 1, dtype=np.int64)
    if values is None:
        mask = labels != 0
    else:  # one value (each label its own class): a comparison, many times faster than isin
        mask = labels == values[0] if len(values) == 1 else np.isin(labels, values)
    components, n = connected_components(mask, connectivity)
    del mask
    return components, np.arange(1, n + 1, dtype=np.int64)
