"""Which code a model file may make the loader run, found before anything in it runs.

A state dict's JSON config names its network: a class of ``monai.networks.nets`` (``"UNet"``),
a name a script registered with :func:`register_network`, or ``"package.module:Class"``, any
importable callable, which is built only with ``trust=True``. A MONAI bundle's config is read
(``json``/``yaml.safe_load``, its ``%`` macros expanded) and walked from ``network_def``,
following its ``@`` references, before MONAI builds anything: every ``$`` expression on that
path, every ``$import`` anywhere in the file (MONAI runs them all when it builds any item), a
``_target_`` that is not a class of ``monai.networks.nets``, a ``_mode_`` other than
``"default"`` and a ``_debug_`` (it starts the debugger) are code from the file, built only with
``trust=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from napari_xaimed._core.errors import UntrustedModelError, XaimedError

# name -> network class (or factory) that a script registered; this process only
_REGISTERED: dict[str, Callable[..., torch.nn.Module]] = {}
# the package's own networks, by name: (module, class); imported when first named
_BUILTIN = {"LesionNet": ("napari_xaimed.models.lesion_classifier", "LesionNet")}
# the name the bundled classifier's config used before networks could be registered
# configs saved before issue 28 name the network by its old module path; both paths stay valid
_ALIASES = {"napari_xaimed.attribution.lesion_model:LesionNet": "LesionNet",
            "napari_xaimed.models.lesion_classifier:LesionNet": "LesionNet"}
NETS = "monai.networks.nets"


def register_network(name: str, cls: Callable[..., torch.nn.Module]) -> None:
    """Let model configs name ``cls`` as ``name`` (``{"network": name, "args": {...}}``), so
    a state dict of your own network loads without ``trust=True``.

    Registration holds in this process (cohort jobs carry the registrations made before they
    start to their workers). Registering a name again replaces it.

    Parameters
    ----------
    name : str
        What configs write as their ``"network"``; not a ``monai.networks.nets`` name and
        without ``":"``.
    cls : callable
        Called with the config's ``args``; must return a ``torch.nn.Module``.

    Examples
    --------
    >>> import torch
    >>> class MyNet(torch.nn.Module):
    ...     def __init__(self, classes=2):
    ...         super().__init__()
    ...         self.head = torch.nn.Linear(1, classes)
    >>> register_network("MyNet", MyNet)
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise XaimedError(f"register a network under a plain name such as 'MyNet', not "
                          f"{name!r}.")
    if not callable(cls):
        raise XaimedError(f"register_network({name!r}, ...) needs the network class (or a "
                          f"function returning a torch.nn.Module), got {type(cls).__name__}.")
    if monai_network(name) is not None:
        raise XaimedError(f"{name!r} is a MONAI network (monai.networks.nets): configs already "
                          "name it; register yours under another name.")
    _REGISTERED[name] = cls


def registered_networks() -> dict[str, Callable[..., torch.nn.Module]]:
    """The networks registered in this process, by name (a copy)."""
    return dict(_REGISTERED)


def monai_network(name: str) -> Callable[..., torch.nn.Module] | None:
    """The ``torch.nn.Module`` class ``monai.networks.nets.<name>``, or one of MONAI's own
    factory functions there (``resnet18``, ``densenet121``...), or None."""
    import monai.networks.nets as nets

    cls = getattr(nets, name, None) if name.isidentifier() else None
    if isinstance(cls, type):
        return cls if issubclass(cls, torch.nn.Module) else None
    # a factory function counts only when MONAI itself defines it (not a name imported there)
    if inspect.isfunction(cls) and cls.__module__.startswith("monai.networks.nets."):
        return cls
    return None


def network_class(name: Any, *, trust: bool, source: str) -> Callable[..., torch.nn.Module]:
    """What a config's ``"network"`` names: a registered network, a MONAI network, or (only
    with ``trust``) any ``"package.module:Class"``.

    Raises
    ------
    UntrustedModelError
        For a ``"module:Class"`` without ``trust``; nothing is imported.
    """
    if not isinstance(name, str) or not name:
        raise XaimedError(f"the config of {source} needs a 'network' that is a name (a MONAI "
                          f"network, a registered one, or 'module:Class'), got {name!r}.")
    if names_code(name) and not trust:
        raise UntrustedModelError(source, [f"callable {name!r} (its config's 'network')"])
    name = _ALIASES.get(name, name)
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        module_name, class_name = _BUILTIN[name]
        return getattr(importlib.import_module(module_name), class_name)
    if ":" in name:
        module_name, class_name = name.split(":", 1)
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise XaimedError(f"cannot import the network {name!r}: {exc}.") from exc
    cls = monai_network(name)
    if cls is None:
        known = sorted({*_REGISTERED, *_BUILTIN})
        raise XaimedError(
            f"{name!r} is not a MONAI network (monai.networks.nets) nor a registered one "
            f"({', '.join(known)}): register your own with register_network(name, cls), or, "
            "for a file you trust, write 'package.module:Class' and load it with trust=True.")
    return cls


def names_code(name: Any) -> bool:
    """Whether a config's ``"network"`` names arbitrary code (a ``"module:Class"`` that is not
    the package's own)."""
    return isinstance(name, str) and ":" in name and name not in _ALIASES


def model_config_file(path: Path) -> Path | None:
    """The config a model file or bundle folder is built from, when there is one: the JSON
    beside a file, a bundle's ``configs/inference.json`` (or ``.yaml``)."""
    path = Path(path)
    if path.is_dir():
        return next((p for p in (path / "configs" / "inference.json",
                                 path / "configs" / "inference.yaml") if p.is_file()), None)
    sidecar = path.with_suffix(".json")
    return sidecar if sidecar.is_file() else None


def config_sha256(config: Any) -> str:
    """SHA-256 of a config's content (keys sorted, so the layout of the file does not count):
    the architecture and preprocessing a model's weights were used with. ``training_inputs``
    (a description of the training data, :mod:`~napari_xaimed.models.domain`) does not count:
    adding it to a config changes nothing the model computes."""
    if isinstance(config, dict) and "training_inputs" in config:
        config = {k: v for k, v in config.items() if k != "training_inputs"}
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------ bundles

def _nodes(config: Any, at: str) -> Iterator[tuple[str, Any]]:
    """Every value in ``config`` with its MONAI id (``a::b::0``), ``config`` itself first."""
    yield at, config
    if isinstance(config, dict | list):
        items = config.items() if isinstance(config, dict) else enumerate(config)
        for key, value in items:
            yield from _nodes(value, f"{at}::{key}" if at else str(key))


def _is_import(value: str) -> bool:
    from monai.bundle import ConfigExpression

    try:
        return ConfigExpression.is_import_statement(value)
    except SyntaxError:  # MONAI stops at it before it evaluates this one
        return False


def _shown(at: str) -> str:
    return at.replace("::", "#")


def _target_problems(component: dict[str, Any], at: str, locator: Any) -> list[str]:
    """What in one ``{"_target_": ...}`` would run code beyond building a MONAI network."""
    found = []
    target = component["_target_"]
    if not _allowed_target(target, locator):
        found.append(f"_target_ {target!r} (at {_shown(at)}; only classes of {NETS} are built "
                     "untrusted)")
    mode = component.get("_mode_", "default")
    if mode != "default":
        found.append(f"_mode_ {mode!r} (at {_shown(at)})")
    if component.get("_debug_"):
        found.append(f"_debug_ (at {_shown(at)}; it starts the Python debugger)")
    return found


def _allowed_target(target: Any, locator: Any) -> bool:
    """Whether MONAI would resolve ``target`` to a network class of ``monai.networks.nets``:
    a short name (``"UNet"``, found the way MONAI's locator finds it) or its full path."""
    if not isinstance(target, str) or not target or target[0] in "$@%":
        return False
    name = target.rsplit(".", 1)[-1]
    cls = monai_network(name)
    if cls is None:
        return False
    if "." not in target:
        module = locator.get_component_module_name(target)
        if isinstance(module, list):  # MONAI takes the first
            module = module[0] if module else None
        return module is not None and getattr(importlib.import_module(module), name,
                                              None) is cls
    if not target.startswith(f"{NETS}."):
        return False
    from monai.utils.module import locate  # what MONAI builds it with; only monai modules

    return locate(target) is cls


def bundle_code(parser: Any, start: str = "network_def") -> list[str]:
    """The code building ``start`` from a parsed bundle config would run, each with where the
    config names it; empty when it only builds classes of ``monai.networks.nets``.

    ``parser`` is a :class:`monai.bundle.ConfigParser` whose config is read and whose macros
    and relative ids are resolved (``parse()``), with nothing built yet.
    """
    from monai.bundle import ConfigExpression, ReferenceResolver

    found: list[str] = []
    for at, value in _nodes(parser.get(), ""):
        if isinstance(value, str) and _is_import(value):
            found.append(f"expression {value!r} (at {_shown(at)}; MONAI runs every import of "
                         "a config)")
    seen: set[str] = set()
    todo = [start]
    while todo:
        item = ReferenceResolver.normalize_id(todo.pop())
        if item in seen:
            continue
        seen.add(item)
        try:
            sub = parser[item]
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # a reference to nothing: MONAI refuses it before it builds anything
        for at, value in _nodes(sub, item):
            if isinstance(value, dict) and "_target_" in value:
                found += _target_problems(value, at, parser.locator)
            elif isinstance(value, str):
                if ConfigExpression.is_expression(value) and not _is_import(value):
                    found.append(f"expression {value!r} (at {_shown(at)})")
                todo += ReferenceResolver.match_refs_pattern(value)
    return list(dict.fromkeys(found))


def check_trusted(source: str, found: list[str], trust: bool) -> bool:
    """Raise :class:`UntrustedModelError` for code found in ``source`` unless ``trust``;
    return whether code from the file will run (recorded as ``trusted`` in provenance)."""
    if found and not trust:
        raise UntrustedModelError(source, found)
    return bool(found)
