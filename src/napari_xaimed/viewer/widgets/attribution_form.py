"""What the attribution form offers for the chosen model and methods: the model's classes as
targets, the attention fields for transformers only, and what a map's values mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_xaimed.attribution import ATTENTION_METHODS

PREDICTED = "predicted class"
#: Form field (attribute of the widget) -> the method parameter it sets; a field shows only when
#: a chosen method takes its parameter.
FIELD_PARAMS = {"steps": "steps", "samples": "samples", "noise": "noise", "window": "window",
                "stride": "stride", "block": "block", "head": "head"}


@dataclass(frozen=True)
class ModelFacts:
    """What the form needs to know of a loaded model."""

    classes: tuple[str, ...]
    attention: bool
    input_size: tuple[int, ...] | None


def model_facts(model: Any) -> ModelFacts:
    """Classes, whether it has self-attention blocks, and its input grid, of a
    :class:`~napari_xaimed.models.LoadedModel`."""
    from napari_xaimed.attribution.attention_capture import attention_modules

    try:
        attention = bool(attention_modules(model.module))
    except (AttributeError, RuntimeError):  # TorchScript: no modules the hooks could read
        attention = False
    size = getattr(model.preprocessing, "input_size", None)
    return ModelFacts(tuple(model.classes or ()), attention,
                      None if size is None else tuple(int(n) for n in size))


def target_choices(classes: tuple[str, ...] | None) -> list[tuple[str, str]]:
    """``(label, value)`` pairs: the predicted class, then the model's classes by index and
    name when known, else indices 0..9."""
    if classes:
        return [(PREDICTED, PREDICTED), *((f"{i} ({name})", str(i))
                                          for i, name in enumerate(classes))]
    return [(PREDICTED, PREDICTED), *((str(i), str(i)) for i in range(10))]


def values_text(result: Any) -> str:
    """What a map's values are (its colour bar's title)."""
    if result.method in ATTENTION_METHODS:
        return "attention weight (from 0)"
    what = "the explained channel's summed logit" if "channel" in (result.params or {}) \
        else "the explained class's score"
    if result.signed:
        return f"relevance for {what}: red raises it, blue lowers it"
    return f"relevance for {what} (unsigned, from 0)"
