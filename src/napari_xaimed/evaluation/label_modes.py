"""How the label values of semantic maps become evaluated classes and instances.

A semantic map's label values are never merged silently (DESIGN.md): by default each value is
its own class. ``label_mode`` of :func:`~napari_xaimed.evaluation.evaluate` says otherwise:

- ``"per_label"`` (the default): each nonzero label value found in either map is a class of
  its own (named by the value); the instances of a class are the connected components of its
  value, and the result adds the mean over classes (:func:`mean_over_classes`). This is
  Panoptica with one label group per value.
- ``"panoptica"``: the components of each label value, kept apart (voxels of different values
  never join one component, even where they touch), matched across values as one class
  ``"all"``: what Panoptica 2.1.7 does with a semantic pair and no class groups.
- ``"merged"``: every nonzero value is one foreground; its connected components are the
  instances (one class ``"all"``). Only when asked for.

``classes=`` groups values itself and wins over ``"per_label"``: each group is a class whose
values are merged (``"merged"``), or kept apart and matched across (``"panoptica"``). Maps with
a single nonzero value are evaluated as one class ``"all"`` in every mode (``"binary"``), and
instance maps (``instance_input=True``) take their ids as instances (``"instances"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError

#: What ``label_mode`` accepts.
LABEL_MODES = ("per_label", "panoptica", "merged")
#: The name of the summary row with the mean over classes.
MEAN_CLASS = "mean over classes"

_DESCRIPTIONS = {
    "per_label": "each label value is its own class",
    "panoptica": "Panoptica-compatible: components of each label value kept apart, "
                 "matched across values",
    "merged": "label values merged into one foreground per class",
    "binary": "one label value: a binary map",
    "instances": "label values are instance ids",
}


@dataclass(frozen=True)
class LabelPlan:
    """The classes to evaluate and how their instances are found.

    Attributes
    ----------
    mode : str
        The mode that runs: ``"per_label"``, ``"panoptica"``, ``"merged"``, ``"binary"`` or
        ``"instances"``.
    classes : dict
        Class name -> label values (None: every nonzero value).
    values_apart : bool
        Semantic input: the components of each value are kept apart.
    values : list of int or None
        The nonzero label values found in the maps, where they were looked for.
    """

    mode: str
    classes: dict[str, list[int] | None]
    values_apart: bool = False
    values: list[int] | None = None


def class_values(classes: Any) -> dict[str, list[int] | None]:
    """Class name -> label values of a ``classes=`` argument (None: one class ``"all"``)."""
    if classes is None:
        return {"all": None}
    if isinstance(classes, dict):
        out = {}
        for name, values in classes.items():
            vals = [values] if isinstance(values, int | np.integer) else list(values)
            if not vals or any(int(v) <= 0 for v in vals):
                raise XaimedError(f"class {name!r} needs positive label values, got {values!r}.")
            out[str(name)] = [int(v) for v in vals]
        return out
    vals = [int(v) for v in classes]
    return {str(v): [v] for v in vals}


def label_plan(label_mode: str | None, classes: Any, *, instance_input: bool,
               parts_only: bool = False,
               values: Callable[[], np.ndarray] | None = None) -> LabelPlan:
    """Which classes to evaluate, and how, from ``label_mode`` and ``classes``.

    Parameters
    ----------
    label_mode : {"per_label", "panoptica", "merged"} or None
        None is ``"per_label"``.
    classes : dict, list or None
        As for :func:`~napari_xaimed.evaluation.evaluate`.
    instance_input : bool
    parts_only : bool
        Part-aware classes and no ``classes``: no other class is evaluated.
    values : callable
        Returns the sorted nonzero label values of both maps; called only when needed (the
        default mode without ``classes``).

    Returns
    -------
    LabelPlan

    Raises
    ------
    XaimedError
        For an unknown mode, or a mode that does not apply (instance input, part-aware only).
    """
    if label_mode is not None and label_mode not in LABEL_MODES:
        raise XaimedError(f"label_mode must be one of {LABEL_MODES} (or None for "
                          f"'per_label'), got {label_mode!r}.")
    if instance_input:
        if label_mode is not None:
            raise XaimedError(
                f"label_mode={label_mode!r} applies to semantic maps; with instance_input=True "
                "each label value is an instance already: leave label_mode out (or group the "
                "ids with classes=).")
        return LabelPlan("instances", class_values(classes))
    if classes is not None:  # the user's groups are the classes, whatever "per_label" says
        apart = label_mode == "panoptica"
        return LabelPlan("panoptica" if apart else "merged", class_values(classes), apart)
    if parts_only:
        if label_mode == "panoptica":
            raise XaimedError(
                f"label_mode={label_mode!r} does not apply to part-aware classes (a thing is "
                "the union of its thing and part labels): leave it out, or add classes= for "
                "other classes.")
        return LabelPlan("merged", {})
    if label_mode == "merged":
        return LabelPlan("merged", {"all": None})
    if label_mode == "panoptica":
        return LabelPlan("panoptica", {"all": None}, True)
    found = [int(v) for v in (values() if values is not None else [])]
    if len(found) <= 1:
        return LabelPlan("binary", {"all": None}, False, found)
    return LabelPlan("per_label", {str(v): [v] for v in found}, False, found)


def describe_label_mode(params: Mapping[str, Any]) -> str:
    """One line for a person: which label mode ran, from a result's ``params``."""
    mode = params.get("label_mode")
    if mode is None:
        return ""
    text = f"Labels: {_DESCRIPTIONS.get(mode, mode)} ({mode})"
    values = params.get("label_values")
    if values:
        text += f"; values {', '.join(str(v) for v in values)}"
    if params.get("classes") is not None:
        text += "; classes grouped by classes="
    return text + "."


def _mean(values: list[float]) -> float:
    values = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(values)) if values else math.nan


def mean_over_classes(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary row over classes: TP, FP, FN and instance counts summed; PQ, SQ, RQ and
    every mean metric averaged over the classes (each class counts once; NaN classes left out).
    """
    out: dict[str, Any] = {"class": MEAN_CLASS}
    for key in ("tp", "fp", "fn", "n_reference", "n_prediction"):
        out[key] = int(sum(s[key] for s in summaries))
    keys = [k for k in summaries[0] if k not in out and k != "class"] if summaries else []
    for key in keys:
        out[key] = _mean([s[key] for s in summaries if key in s])
    return out
