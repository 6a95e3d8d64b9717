"""Things with parts: turn a segmentation into the label layout the evaluation's ``parts``
argument takes.

The layout is a semantic map with 0 for background, 1 for the thing's body and ``2, 3, ...``
for its parts, and a spec ``{name: {"thing": [1, 2, ...], "parts": {part: [value]}}}`` (see
:mod:`napari_xaimed.evaluation.parts`): the thing is every nonzero voxel, the things are its
connected components, and each part is scored inside its own thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.validate import as_volume

PartsSpec = dict[str, dict[str, Any]]


def _spec(name: str, part_names: Sequence[str]) -> PartsSpec:
    values = list(range(1, len(part_names) + 2))
    return {name: {"thing": values,
                   "parts": {part: [value] for part, value in zip(part_names, values[1:],
                                                                    strict=True)}}}


def parts_from_classes(
    classes: np.ndarray,
    thing: Sequence[int],
    parts: dict[str, Sequence[int]],
    name: str = "thing",
) -> tuple[np.ndarray, PartsSpec]:
    """Parts from a multi-class output: which class values make the thing, and which its parts.

    Parameters
    ----------
    classes : numpy.ndarray
        3D class labels (e.g. kmeans/atropos/multi-Otsu classes or a model's argmax).
    thing : sequence of int
        The class values that together form the thing (body and parts).
    parts : dict
        Part name -> the class values of that part; each must be among ``thing``, and a value
        belongs to one part at most.
    name : str
        The class name in the spec.

    Returns
    -------
    labels : numpy.ndarray
        uint8: 0 background, 1 the thing's body (thing values in no part), ``k + 2`` part ``k``
        (in the order of ``parts``).
    spec : dict
        The matching ``parts=`` argument of :func:`napari_xaimed.evaluation.evaluate`.

    Examples
    --------
    >>> import numpy as np
    >>> classes = np.array([0, 1, 2, 3]).reshape(1, 1, 4)
    >>> labels, spec = parts_from_classes(classes, thing=[2, 3], parts={"core": [3]})
    >>> labels.ravel().tolist(), spec
    ([0, 0, 1, 2], {'thing': {'thing': [1, 2], 'parts': {'core': [2]}}})
    """
    classes = as_volume(classes, "classes")
    thing_values = {int(v) for v in thing}
    if not thing_values:
        raise XaimedError("thing must list at least one class value.")
    if not parts:
        raise XaimedError('parts must name at least one part, e.g. {"core": [3]}.')
    if len(parts) > 254:
        raise XaimedError(f"at most 254 parts fit the uint8 layout, got {len(parts)}.")
    seen: set[int] = set()
    labels = np.isin(classes, sorted(thing_values)).astype(np.uint8)
    for index, (part, values) in enumerate(parts.items()):
        values = {int(v) for v in (values if isinstance(values, Sequence) else [values])}
        if not values <= thing_values:
            raise XaimedError(f"part {part!r} uses class values {sorted(values - thing_values)} "
                              f"that are not among the thing's {sorted(thing_values)}: add "
                              "them to thing.")
        if values & seen:
            raise XaimedError(f"class values {sorted(values & seen)} are in more than one part: "
                              "give each value to one part.")
        seen |= values
        labels[np.isin(classes, sorted(values))] = index + 2
    return labels, _spec(name, list(parts))


def core_parts(
    instances: np.ndarray,
    volume: np.ndarray,
    *,
    value: float | None = None,
    percentile: float | None = None,
    part: str = "core",
    name: str = "lesion",
) -> tuple[np.ndarray, PartsSpec]:
    """A core part inside each instance: its voxels above an intensity threshold.

    Parameters
    ----------
    instances : numpy.ndarray
        3D instance labels (or a mask: one thing).
    volume : numpy.ndarray
        The intensities, same shape.
    value : float, optional
        Absolute threshold: a voxel of an instance is core when its intensity is above it.
    percentile : float, optional
        Per-instance threshold (0-100): the core is the voxels above that percentile of the
        instance's own intensities, so a faint lesion gets a core too. Give exactly one.
    part, name : str
        The part's and the class's names in the spec.

    Returns
    -------
    labels : numpy.ndarray
        uint8: 0 background, 1 the thing's body, 2 the core.
    spec : dict
        ``{name: {"thing": [1, 2], "parts": {part: [2]}}}`` for the evaluation's ``parts``.
    """
    instances = as_volume(instances, "instances")
    volume = as_volume(volume, "volume")
    if instances.shape != volume.shape:
        raise XaimedError(f"instances {instances.shape} and volume {volume.shape} must have "
                          "the same shape.")
    if (value is None) == (percentile is None):
        raise XaimedError("Give exactly one of value= (absolute) or percentile= (0-100, per "
                          "instance).")
    inside = instances != 0
    labels = inside.astype(np.uint8)
    if value is not None:
        labels[inside & (volume > value)] = 2
    else:
        if not 0 <= percentile <= 100:  # type: ignore[operator]
            raise XaimedError(f"percentile must be within 0-100, got {percentile}.")
        ids = instances[inside]
        intensities = volume[inside]
        order = np.lexsort((intensities, ids))
        sorted_ids, sorted_values = ids[order], intensities[order]
        starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
        ends = np.r_[starts[1:], len(sorted_ids)]
        cut = np.empty(len(ids), dtype=np.float64)
        for start, end in zip(starts, ends, strict=True):
            cut[start:end] = np.percentile(sorted_values[start:end], percentile)
        core = np.empty(len(ids), bool)
        core[order] = sorted_values > cut
        labels[inside] = np.where(core, 2, 1)
    return labels, _spec(name, [part])
