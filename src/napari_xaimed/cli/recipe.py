"""A recorded computation as data: the public calls that make an output, which
:func:`execute` runs (``napari-xaimed rerun``) and :func:`render` writes as Python source
(``napari-xaimed script``), so a rerun and a saved script are one and the same computation.

A :class:`Recipe` is a list of :class:`Call` s, each assigning one variable, on a namespace
that starts with the recorded inputs by role (``image``, ``fixed`` ...: objects with
``.data``, ``.spacing`` and ``.origin``). Arguments are JSON-like literals or :class:`Ref` s to
that namespace (``image.data``, ``result.probabilities[1]``, ``result.classes.values()``).
"""

from __future__ import annotations

import ast
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from napari_xaimed._core.errors import XaimedError

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TOKEN = re.compile(rf"\.({_NAME})|\[([^\[\]]+)\]|(\(\))")


@dataclass(frozen=True)
class Ref:
    """A value of the namespace: a name followed by ``.attr``, ``[literal]`` or ``()``."""

    expr: str

    def __post_init__(self) -> None:
        match = re.match(_NAME, self.expr)
        rest = self.expr[match.end():] if match else None
        if rest is None or "".join(m.group(0) for m in _TOKEN.finditer(rest)) != rest:
            raise ValueError(f"not a reference: {self.expr!r}")

    def resolve(self, namespace: dict[str, Any]) -> Any:
        """The value this reference names in ``namespace``."""
        head = re.match(_NAME, self.expr).group(0)  # type: ignore[union-attr]
        value = namespace[head]
        for attr, index, call in _TOKEN.findall(self.expr[len(head):]):
            if attr:
                value = getattr(value, attr)
            elif index:
                value = value[ast.literal_eval(index)]
            elif call:
                value = value()
        return value


@dataclass(frozen=True)
class Call:
    """``target = func(*args, **kwargs)``: ``func`` is ``"module:name"`` (imported) or a
    :class:`Ref` to a method (``Ref("result.apply")``)."""

    target: str
    func: str | Ref
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recipe:
    """The calls that compute an output from its inputs, and which value is the output.

    Attributes
    ----------
    roles : tuple of str
        The inputs the calls read (names in the namespace), in the order a script asks for them.
    calls : list of Call
    output : Ref
        The output array, once the calls ran.
    grid : str
        The input whose grid (spacing, origin) the output lies on.
    is_label : bool
        Whether the output is a label map.
    """

    roles: tuple[str, ...]
    calls: list[Call]
    output: Ref
    grid: str
    is_label: bool = False


def _function(func: str | Ref, namespace: dict[str, Any]) -> Any:
    if isinstance(func, Ref):
        return func.resolve(namespace)
    module, name = func.split(":")
    return getattr(importlib.import_module(module), name)


def _value(value: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(value, Ref):
        return value.resolve(namespace)
    if isinstance(value, tuple):
        return tuple(_value(v, namespace) for v in value)
    if isinstance(value, list):
        return [_value(v, namespace) for v in value]
    if isinstance(value, dict):
        return {k: _value(v, namespace) for k, v in value.items()}
    return value


def execute(recipe: Recipe, inputs: dict[str, Any]) -> Any:
    """Run the recipe's calls on ``inputs`` (role -> input) and return its output."""
    namespace = dict(inputs)
    for call in recipe.calls:
        func = _function(call.func, namespace)
        namespace[call.target] = func(*_value(call.args, namespace),
                                      **_value(call.kwargs, namespace))
    return recipe.output.resolve(namespace)


# ------------------------------------------------------------------------------ rendering

def literal(value: Any) -> str:
    """Python source of a recipe value (JSON-like literals, tuples, references)."""
    if isinstance(value, Ref):
        return value.expr
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise XaimedError(f"a recorded parameter of type {type(value).__name__} cannot be written "
                      "into a script.")


def imports(recipe: Recipe) -> dict[str, list[str]]:
    """The ``from module import name`` lines the recipe's calls need: module -> names."""
    needed: dict[str, list[str]] = {}
    for call in recipe.calls:
        if isinstance(call.func, str):
            module, name = call.func.split(":")
            if name not in needed.setdefault(module, []):
                needed[module].append(name)
    return needed


def _call_source(call: Call, indent: str) -> str:
    func = call.func.expr if isinstance(call.func, Ref) else call.func.split(":")[1]
    parts = [literal(a) for a in call.args] + [f"{k}={literal(v)}" for k, v in
                                               call.kwargs.items()]
    head = f"{indent}{call.target} = {func}("
    line = head + ", ".join(parts) + ")"
    if len(line) <= 96:
        return line
    inner = indent + " " * 4
    return head + "\n" + "".join(f"{inner}{p},\n" for p in parts) + f"{indent})"


def render(recipe: Recipe, indent: str = "    ") -> list[str]:
    """The recipe's calls as Python source lines, ending in ``output = ...``."""
    lines = [_call_source(call, indent) for call in recipe.calls]
    lines.append(f"{indent}output = {recipe.output.expr}")
    return lines
