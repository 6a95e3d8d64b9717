"""The attention probabilities of a transformer's blocks in one forward pass, and where each
block's tokens sit on the volume.

Two kinds of MONAI block are read:

- :class:`monai.networks.blocks.SABlock` (``ViT``, ``UNETR``, ...): global self-attention over
  the patch tokens (and a leading CLS token in a classification ``ViT``). Its softmax output goes
  through its ``drop_weights`` dropout (an identity in eval mode), so a forward hook there sees
  the probabilities ``(1, heads, N, N)`` with their autograd graph. MONAI's own ``save_attn``
  keeps a detached copy, which has no gradient for gradient-weighted attention, and setting it
  would change the user's module.
- :class:`monai.networks.nets.swin_unetr.WindowAttention` (``SwinUNETR``): attention within
  windows of ``window`` tokens, in every other block after a cyclic shift of the token grid.
  Its ``attn_drop`` dropout sees ``(windows, heads, n, n)``; a pre-hook on the enclosing
  ``SwinTransformerBlock`` gives the stage's token grid, so the windows can be placed back with
  MONAI's own ``window_partition`` / ``window_reverse`` and the shift.

The hooks are removed when the block ends, also on an error, so the user's model keeps no trace
of the run. A model whose blocks would not show their probabilities (flash attention, gradient
checkpointing, which reruns blocks in the backward pass) is read through a deep copy with those
switches off (:func:`readable`): the same weights and the same outputs, the user's module
untouched.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from napari_xaimed._core.errors import XaimedError

#: What the attention methods need a model to contain, named in refusals.
ATTENTION_BLOCKS = "MONAI SABlock (ViT, UNETR) or Swin WindowAttention (SwinUNETR)"


def _monai_types() -> tuple[type, type, type, type]:
    from monai.networks.blocks.patchembedding import PatchEmbeddingBlock
    from monai.networks.blocks.selfattention import SABlock
    from monai.networks.nets.swin_unetr import SwinTransformerBlock, WindowAttention

    return SABlock, WindowAttention, SwinTransformerBlock, PatchEmbeddingBlock


@dataclass
class AttentionRecord:
    """One attention block's probabilities in one pass.

    Attributes
    ----------
    name : str
        The attention module's name in the network.
    kind : {"global", "window"}
        ``SABlock`` (all tokens) or Swin ``WindowAttention``.
    heads : int
    probs : torch.Tensor or None
        ``(windows, heads, n, n)`` (one "window" for global attention) with its graph, kept for
        gradient-weighted attention only.
    reduced : torch.Tensor or None
        ``(windows, n, n)``: the heads' mean (or one head) of the probabilities, or for
        gradient-weighted attention the mean of the positive part of gradient x attention
        (filled in by the backward pass).
    grid : tuple of int or None
        The token grid ``(z, y, x)`` of the block's stage, without padding (Swin), or of the
        patch tokens (global attention: set after the pass, see :func:`patch_grid`).
    window, shift, padded : tuple of int or None
        Swin only: the window size and cyclic shift this block used at this grid, and the grid
        padded to whole windows.
    """

    name: str
    kind: str
    heads: int
    probs: torch.Tensor | None = field(default=None, repr=False)
    reduced: torch.Tensor | None = field(default=None, repr=False)
    grid: tuple[int, ...] | None = None
    window: tuple[int, ...] | None = None
    shift: tuple[int, ...] | None = None
    padded: tuple[int, ...] | None = None

    @property
    def tokens(self) -> int:
        """Tokens per window (all tokens, for global attention)."""
        ref = self.reduced if self.reduced is not None else self.probs
        return int(ref.shape[-1])  # type: ignore[union-attr]


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``SABlock`` and ``WindowAttention`` modules of ``model``, by name, in registration
    order."""
    sa, window, _, _ = _monai_types()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, sa | window)]


def hyena_stages(model: nn.Module) -> list[str]:
    """Names of MONAI Hyena blocks (SwinUNETR stages with no attention), which attention
    rollout cannot pass through."""
    return [n for n, m in model.named_modules() if type(m).__name__ == "HyenaTransformerBlock"]


def readable(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """``model`` itself, or a deep copy in which every attention block materialises its
    probabilities once per pass (flash attention off, gradient checkpointing off), with what was
    switched off. Flash attention gives the same outputs without ever forming the probabilities;
    checkpointing would run the blocks (and the hooks) again during the backward pass."""
    sa, window, swin_block, _ = _monai_types()
    changes = []
    for name, module in model.named_modules():
        if isinstance(module, sa | window) and getattr(module, "use_flash_attention", False):
            changes.append(f"{name}: flash attention")
        if isinstance(module, swin_block) and getattr(module, "use_checkpoint", False):
            changes.append(f"{name}: gradient checkpointing")
    if not changes:
        return model, []
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, sa | window):
            module.use_flash_attention = False
        if isinstance(module, swin_block):
            module.use_checkpoint = False
    return twin, changes


def _reduce(probs: torch.Tensor, head: int | None) -> torch.Tensor | None:
    if head is None:
        return probs.mean(dim=1)
    # a copy, not a view: a view would keep every head's probabilities alive
    return probs[:, head].clone() if head < probs.shape[1] else None


@contextmanager
def capturing(model: nn.Module, *, graph: bool, head: int | None
              ) -> Iterator[list[AttentionRecord]]:
    """Record the attention of every block that runs inside the ``with`` block, in order.

    Parameters
    ----------
    model : torch.nn.Module
        The network (see :func:`readable`).
    graph : bool
        Keep each block's probabilities with their graph and, when the backward pass reaches
        them, store the mean over heads (or ``head``) of ``relu(gradient * attention)`` in
        ``reduced`` (Chefer et al. 2021). Otherwise store the mean over heads (or ``head``) of
        the probabilities only.
    head : int, optional
        One head instead of the heads' mean; a block with fewer heads gets ``reduced=None``.

    Yields
    ------
    list of AttentionRecord
        Filled as the forward pass runs.
    """
    sa, window, swin_block, _ = _monai_types()
    records: list[AttentionRecord] = []
    # the stage geometry each window attention will run at, set by its block's pre-hook
    geometry: dict[int, dict[str, Any]] = {}
    handles = []

    def keep(name: str, kind: str, probs: torch.Tensor, extra: dict[str, Any]) -> None:
        record = AttentionRecord(name, kind, int(probs.shape[1]), **extra)
        if graph:
            record.probs = probs

            def weigh(grad: torch.Tensor) -> None:
                record.reduced = _reduce((grad * probs.detach()).clamp(min=0), head)

            if probs.requires_grad:
                probs.register_hook(weigh)
        else:
            record.reduced = _reduce(probs.detach(), head)
        records.append(record)

    def swin_geometry(block: nn.Module, args: tuple[Any, ...]) -> None:
        from monai.networks.nets.swin_unetr import get_window_size

        shape = tuple(args[0].shape)
        if len(shape) != 5:
            return  # 2D Swin: not a volume
        grid = shape[1:4]
        win, shift = get_window_size(grid, block.window_size, block.shift_size)
        padded = tuple(int(math.ceil(g / w)) * w for g, w in zip(grid, win, strict=True))
        geometry[id(block.attn)] = {"grid": grid, "window": tuple(win), "shift": tuple(shift),
                                    "padded": padded}

    for name, module in model.named_modules():
        if isinstance(module, sa):
            def on_sa(_m: nn.Module, inputs: tuple[Any, ...], _out: Any,
                      name: str = name) -> None:
                keep(name, "global", inputs[0], {})
            handles.append(module.drop_weights.register_forward_hook(on_sa))
        elif isinstance(module, window):
            def on_window(_m: nn.Module, inputs: tuple[Any, ...], _out: Any, name: str = name,
                          owner: nn.Module = module) -> None:
                where = geometry.get(id(owner))
                if where is None:
                    raise XaimedError(
                        f"the window attention {name!r} does not run inside MONAI's "
                        "SwinTransformerBlock (3D), so its windows cannot be placed on the "
                        "volume: attention methods support MONAI's SwinUNETR / SwinTransformer.")
                keep(name, "window", inputs[0], dict(where))
            handles.append(module.attn_drop.register_forward_hook(on_window))
        elif isinstance(module, swin_block):
            handles.append(module.register_forward_pre_hook(swin_geometry))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def patch_grid(model: nn.Module, x: torch.Tensor) -> tuple[int, int, int] | None:
    """The patch grid of the model's ``PatchEmbeddingBlock`` for input ``x`` (``ViT``,
    ``UNETR``): the input's size divided by the patch size, per axis; None without one."""
    _, _, _, embedding = _monai_types()
    blocks = [m for m in model.modules() if isinstance(m, embedding)]
    if len(blocks) != 1:
        return None
    projection = blocks[0].patch_embeddings
    if isinstance(projection, nn.Conv3d):
        patch = tuple(int(k) for k in projection.kernel_size)
    else:  # perceptron: an einops Rearrange with the patch lengths, then a Linear
        lengths = getattr(projection[0], "axes_lengths", {})
        patch = tuple(int(dict(lengths).get(f"p{i}", 0)) for i in (1, 2, 3))
        if 0 in patch:
            return None
    return tuple(int(s) // p for s, p in zip(x.shape[2:], patch, strict=True))  # type: ignore
