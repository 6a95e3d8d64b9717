"""What one forward pass shows about a network: which modules it calls and how often, the
shapes they return, and the facts the hook-based methods depend on.

Captum's DeepLift, guided backpropagation and LRP keep per-module state in forward hooks, so a
module called twice in one pass (MONAI reuses one activation module inside a residual block,
e.g. ``resnet18``, ``SegResNet``, ``DynUNet``) breaks them: DeepLift raises, the others can
give a wrong map without a word. :func:`untangled` gives a copy of the model in which every
such module is one copy per call. TorchScript models run without module hooks at all, so the
hook-based methods are refused on them
(:func:`~napari_xaimed.attribution.hooked.refuse_scripted`) instead of silently returning a
plain gradient. :func:`cam_layer` picks the Grad-CAM layer: the last spatial feature map.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from napari_xaimed._core.errors import XaimedError


@dataclass
class Call:
    """One module's calls in a forward pass: the first output's shape (None if not a tensor),
    how often it ran, and when its first call ended (order of completion)."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    calls: int = 1
    order: int = 0
    tensor: weakref.ref | None = field(default=None, repr=False)
    value: torch.Tensor | None = field(default=None, repr=False)  # kept when asked for


class CallRecord:
    """The modules one forward pass ran, keyed by module, in order of completion."""

    def __init__(self) -> None:
        self.calls: dict[int, Call] = {}
        self.output: Any = None
        self.input_shape: tuple[int, ...] | None = None

    def reused(self) -> list[Call]:
        """Leaf modules that ran more than once."""
        return [c for c in self.calls.values()
                if c.calls > 1 and not list(c.module.children())]

    def feature_maps(self) -> list[Call]:
        """Modules that ran once and returned a 5D tensor ``(n, c, z, y, x)``, in order."""
        return sorted((c for c in self.calls.values() if c.calls == 1 and c.shape is not None
                       and len(c.shape) == 5), key=lambda c: c.order)


@contextmanager
def recording(model: nn.Module, keep: bool = False) -> Iterator[CallRecord]:
    """Record every module's calls during the forward passes made inside the block, and
    ``model``'s own output (the first element of an output tuple); ``keep``: hold each
    module's first output too."""
    record = CallRecord()
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    counter = iter(range(1 << 62))

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        key = id(module)
        if module is model and record.output is None:
            record.output = output[0] if isinstance(output, tuple | list) and output else output
            if _inputs and isinstance(_inputs[0], torch.Tensor):
                record.input_shape = tuple(_inputs[0].shape)
        if key in record.calls:
            record.calls[key].calls += 1
            return
        tensor = output if isinstance(output, torch.Tensor) else None
        record.calls[key] = Call(names.get(key, ""), module,
                                 tuple(tensor.shape) if tensor is not None else None,
                                 order=next(counter),
                                 tensor=weakref.ref(tensor) if tensor is not None else None,
                                 value=tensor if keep else None)

    modules = {id(m): m for m in model.modules()}.values()
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def record_calls(model: nn.Module, x: torch.Tensor, forward: nn.Module | None = None
                 ) -> CallRecord:
    """One forward pass on ``x`` without gradients, recording ``model``'s modules; the pass
    runs ``forward`` (a wrapper around ``model``) when given."""
    with recording(model) as record, torch.no_grad():
        (forward or model)(x)
    return record


def is_scripted(model: nn.Module) -> bool:
    """Whether the model is, or contains, a TorchScript module."""
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())


class PerCall(nn.Module):
    """Stands in for a module that a forward pass calls ``n`` times: call ``i`` of a pass runs
    copy ``i``, so hooks that keep state per module see each use separately. The count
    restarts at every forward pass of the model (a pre-hook on the root calls
    :meth:`restart`)."""

    draws_random = False  # it only calls its children (see napari_xaimed._core.rng)

    def __init__(self, module: nn.Module, n: int):
        super().__init__()
        self.uses = nn.ModuleList(copy.deepcopy(module) for _ in range(n))
        self.count = 0

    def restart(self) -> None:
        self.count = 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.count >= len(self.uses):
            raise XaimedError(
                f"a {type(self.uses[0]).__name__} module ran more often in this pass than in "
                "the model's check pass: the network's layer calls depend on the input, so "
                "DeepLift, guided backpropagation and LRP cannot treat each use apart; pick "
                "a gradient or perturbation method.")
        use = self.uses[self.count]
        self.count += 1
        return use(*args, **kwargs)


def _restart(model: nn.Module, _inputs: Any) -> None:
    for module in model.modules():
        if isinstance(module, PerCall):
            module.restart()


def untangled(model: nn.Module, record: CallRecord) -> nn.Module:
    """``model`` itself when no leaf module runs twice in a pass, none is registered in two
    places and none works in place; else a copy (same weights, same outputs) in which

    - each module that runs ``n`` times is a :class:`PerCall` with ``n`` copies;
    - a module registered under several parents (MONAI's ``DynUNet`` keeps its blocks both as
      attributes and inside its skip layers) is registered once, so that Captum, which hooks
      every registration it walks, hooks it once (the other places still reach it as plain
      attributes);
    - in-place activations work out of place (the hooks of DeepLift and guided
      backpropagation keep a module's input, which in-place work overwrites).
    """
    reused = {id(c.module): c.calls for c in record.reused()}
    in_place = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    if not reused and not in_place and not _extra_registrations(model):
        return model
    memo: dict[int, Any] = {}
    twin = copy.deepcopy(model, memo)
    for module in twin.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    stand_ins = {id(memo[key]): PerCall(memo[key], n) for key, n in reused.items()}
    for parent in list(twin.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in stand_ins:  # every place the module is registered gets the one
                setattr(parent, child_name, stand_ins[id(child)])
    for parent, child_name, child in _extra_registrations(twin):
        del parent._modules[child_name]
        object.__setattr__(parent, child_name, child)  # an attribute, no longer a submodule
    if stand_ins:
        # the hook finds the stand-ins again, so it also serves deep copies of the twin
        twin.register_forward_pre_hook(_restart)
    return twin


_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _extra_registrations(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """The registrations ``(parent, name, child)`` of modules registered in more than one
    place, all but the one to keep: the first inside a container (which runs its children
    from its registry), else the first met. Those in containers are always kept."""
    places: dict[int, list[tuple[nn.Module, str, nn.Module]]] = {}
    for parent in model.modules():
        for name, child in parent._modules.items():
            if child is not None:
                places.setdefault(id(child), []).append((parent, name, child))
    extra = []
    for where in places.values():
        if len(where) < 2:
            continue
        keep = next((w for w in where if isinstance(w[0], _CONTAINERS)), where[0])
        extra += [w for w in where if w is not keep and not isinstance(w[0], _CONTAINERS)]
    return extra


def submodule(model: nn.Module, name: str) -> nn.Module:
    """The module at dotted ``name``, reached as attributes (so also through the places
    :func:`untangled` turned into plain attributes)."""
    module = model
    for part in name.split(".") if name else []:
        module = getattr(module, part)
    return module


def inner_name(model: nn.Module, name: str) -> str:
    """``name`` (of a module in ``model``) as the user's network calls it: without the
    wrappers around the network (the scores adapter, a region score, mixed precision) and
    without the per-call copies of :func:`untangled`."""
    kept, module, parts = [], model, name.split(".") if name else []
    i = 0
    while i < len(parts):
        if isinstance(module, PerCall) and parts[i] == "uses" and i + 1 < len(parts):
            module, i = module.uses[int(parts[i + 1])], i + 2  # "uses.<call>" is ours
            continue
        wrapper = type(module).__name__ in _WRAPPERS
        module = getattr(module, parts[i])
        if not wrapper:
            kept.append(parts[i])
        i += 1
    return ".".join(kept)


#: The modules the plugin wraps around a user's network.
_WRAPPERS = ("Scores", "RegionScore", "_Autocast")


def cam_layer(record: CallRecord, name: str | None, modules: dict[str, nn.Module]
              ) -> tuple[str, nn.Module]:
    """The Grad-CAM layer: the one named, or the last spatial feature map of the pass (the
    last module to finish that returned a 5D tensor of more than one voxel, other than the
    one whose tensor is the model's output). A layer whose map is a single voxel is refused
    with the earlier layers that would do, since its Grad-CAM is a constant."""
    spatial = [c for c in record.feature_maps() if _voxels(c.shape) > 1]
    if name is None:
        # not the modules whose tensor is the model's output (a segmentation's last layer),
        # nor padding, nor 5D tensors that are no map of the volume (a transformer's
        # rearranged tokens: their last three axes are not the input's, shrunk alike)
        candidates = [c for c in spatial
                      if (c.tensor is None or c.tensor() is not record.output)
                      and not isinstance(c.module, _NOT_MAPS)
                      and _like_volume(c.shape, record.input_shape)]
        if not candidates:
            raise XaimedError(
                "the model has no spatial feature map (a 5D output of more than one voxel) "
                "for Grad-CAM at this input size: name a layer (layer='...'), use a larger "
                "input_size, or pick another method (attention_rollout for transformers, "
                "integrated_gradients, occlusion).")
        chosen = max(candidates, key=lambda c: c.order)
        return chosen.name, chosen.module
    if name not in modules:
        options = [c.name for c in spatial][-8:]
        raise XaimedError(f"the model has no layer {name!r}; its last spatial feature maps: "
                          f"{options}.")
    layer = modules[name]
    call = record.calls.get(id(layer))
    if call is not None and call.shape is not None and len(call.shape) == 5 \
            and _voxels(call.shape) == 1:
        earlier = [f"{c.name!r} ({'x'.join(map(str, c.shape[2:]))})" for c in spatial
                   if c.order < call.order][-3:]
        raise XaimedError(
            f"layer {name!r} gives a 1x1x1 feature map at this input size, so its Grad-CAM "
            f"would be one flat value: pick an earlier layer, e.g. {', '.join(earlier) or 'none'}"
            ", or a larger input_size.")
    return name, layer


_NOT_MAPS = (nn.ZeroPad3d, nn.ConstantPad3d, nn.ReflectionPad3d, nn.ReplicationPad3d,
             nn.CircularPad3d, nn.Identity)


def _like_volume(shape: tuple[int, ...] | None, input_shape: tuple[int, ...] | None) -> bool:
    """Whether a 5D output's grid is the input's grid shrunk by one factor on every axis
    (give or take a voxel of padding)."""
    if shape is None or input_shape is None or len(input_shape) != 5:
        return True
    ratios = [s / n for s, n in zip(shape[2:], input_shape[2:], strict=True)]
    return all(abs(s - ratios[0] * n) <= 1.0 for s, n in zip(shape[2:], input_shape[2:],
                                                             strict=True))


def _voxels(shape: tuple[int, ...] | None) -> int:
    n = 1
    for s in (shape or (0, 0, 0))[2:]:
        n *= int(s)
    return n
