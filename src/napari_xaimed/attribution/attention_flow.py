"""The token side of the attention methods (:mod:`~napari_xaimed.attribution.attention`): which
blocks are read, the query weights on the last block's tokens, the readout vector carried back
from the last block to the first (``v <- v M_l``, per window and through the patch mergings for
Swin), and the token map resized onto the volume's grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution.attention_capture import ATTENTION_BLOCKS, AttentionRecord

#: For models without self-attention, the methods to use instead.
INSTEAD = "gradcam, integrated_gradients, saliency or occlusion"


def _included(records: list[AttentionRecord], method: str, block: int, head: int | None
              ) -> list[AttentionRecord]:
    """The blocks the method reads, checked: one for raw attention, ``0..block`` otherwise."""
    if not records:
        raise XaimedError(f"{method}: no attention block ran on this input ({ATTENTION_BLOCKS}); "
                          f"use {INSTEAD}.")
    n = len(records)
    if not -n <= block < n:
        raise XaimedError(f"block {block} does not exist: the model ran {n} attention blocks "
                          f"(0..{n - 1}, or -1 for the last).")
    last = block % n
    chosen = records[last:last + 1] if method == "raw_attention" else records[:last + 1]
    if head is not None:
        short = [r for r in chosen if head >= r.heads]
        if short:
            raise XaimedError(f"head {head} does not exist in block {short[0].name!r} "
                              f"({short[0].heads} heads): pick 0..{short[0].heads - 1} or "
                              "None for their mean.")
    return chosen


def _as_grid(records: list[AttentionRecord], n_patches_grid: tuple[int, ...] | None) -> int:
    """Give global-attention records their patch grid; returns the number of leading tokens
    (CLS) before the patches."""
    glob = [r for r in records if r.kind == "global"]
    if not glob:
        return 0
    tokens = {r.tokens for r in glob}
    if len(tokens) != 1:
        raise XaimedError(f"the attention blocks see different numbers of tokens "
                          f"({sorted(tokens)}): one token sequence is needed to chain them.")
    n = tokens.pop()
    if n_patches_grid is None:
        raise XaimedError("the model's tokens have no patch grid napari-xaimed can find (one "
                          "MONAI PatchEmbeddingBlock): attention methods support ViT and UNETR.")
    extra = n - int(np.prod(n_patches_grid))
    if extra not in (0, 1):
        raise XaimedError(f"the attention blocks see {n} tokens, the patch grid "
                          f"{tuple(n_patches_grid)} has {int(np.prod(n_patches_grid))}: only a "
                          "single CLS token before the patches is supported.")
    for r in glob:
        r.grid = tuple(n_patches_grid)
    return extra


def _apply(record: AttentionRecord, method: str, v: torch.Tensor) -> torch.Tensor:
    """``v M`` per window, ``v`` ``(windows, n)``, ``M`` the block's mixing for ``method``:
    ``A`` (raw), ``(0.5 A + 0.5 I)`` with rows renormalised (rollout; computed as
    ``0.5 u A + 0.5 u`` with ``u = v / rowsum``, never forming the ``n x n`` sum) or ``I + A``
    (gradient-weighted; ``A`` zero where the score's gradient never reached the block)."""
    a = record.reduced
    if a is None:
        return v if method == "attention_gradcam" else torch.zeros_like(v)
    a = a.to(v)
    if method == "attention_rollout":
        u = v / (0.5 * a.sum(dim=-1) + 0.5)
        return 0.5 * torch.bmm(u[:, None], a)[:, 0] + 0.5 * u
    mixed = torch.bmm(v[:, None], a)[:, 0]
    return v + mixed if method == "attention_gradcam" else mixed


def _through_windows(v: torch.Tensor, record: AttentionRecord, method: str) -> torch.Tensor:
    """``v`` (the stage grid ``(z, y, x)``) carried back through one Swin block: padded to whole
    windows, shifted as the block shifted its tokens, mixed per window, put back."""
    from monai.networks.nets.swin_unetr import window_partition, window_reverse

    grid, padded, win, shift = record.grid, record.padded, record.window, record.shift
    pad = [0, padded[2] - grid[2], 0, padded[1] - grid[1], 0, padded[0] - grid[0]]  # type: ignore
    x = F.pad(v, pad)
    if any(shift):  # type: ignore[arg-type]
        x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(0, 1, 2))  # type: ignore
    windows = _apply(record, method, window_partition(x[None, ..., None], win)[..., 0])
    x = window_reverse(windows.reshape(-1, *win, 1), win, [1, *padded])[0, ..., 0]  # type: ignore
    if any(shift):  # type: ignore[arg-type]
        x = torch.roll(x, shifts=tuple(shift), dims=(0, 1, 2))  # type: ignore[arg-type]
    return x[:grid[0], :grid[1], :grid[2]]  # type: ignore[index]


def _split_to(v: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """A coarse stage's token values split evenly among the ``2 x 2 x 2`` finer tokens each was
    merged from (MONAI's PatchMerging, which pads odd sizes)."""
    if tuple(-(-g // 2) for g in grid) != tuple(v.shape):
        raise XaimedError(f"the Swin stages' token grids {tuple(v.shape)} and {tuple(grid)} are "
                          "not related by a 2x patch merging: this Swin layout is not supported.")
    fine = v.repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2) / 8
    return fine[:grid[0], :grid[1], :grid[2]]


def carry(records: list[AttentionRecord], method: str, start: torch.Tensor, cls: int
          ) -> torch.Tensor:
    """The readout ``start`` (query weights on the last block's tokens) carried back to the first
    block's patch grid: ``v <- v M_l`` for the blocks from last to first, ``M_l`` the method's
    mixing (:func:`_apply`).

    Parameters
    ----------
    records : list of AttentionRecord
        The blocks, first to last.
    method : str
        An attention method, or ``"identity"`` (the residual path alone: the query weights
        carried through the patch mergings only).
    start : torch.Tensor
        Global attention: ``(N,)`` over all tokens (CLS first); Swin: the last block's stage grid.
    cls : int
        Leading non-patch tokens (global attention).

    Returns
    -------
    torch.Tensor
        On the first block's patch grid ``(z, y, x)``, float64.
    """
    v = start.double()
    for record in reversed(records):
        if record.kind == "window" and tuple(v.shape) != tuple(record.grid):  # type: ignore
            v = _split_to(v, record.grid)  # type: ignore[arg-type]
        if method == "identity":  # the residual path alone
            continue
        v = (_apply(record, method, v[None])[0] if record.kind == "global"
             else _through_windows(v, record, method))
    if records[0].kind == "global":
        v = v[cls:].reshape(records[0].grid)  # type: ignore[arg-type]
    return v


def _start(records: list[AttentionRecord], cls: int, mask: torch.Tensor | None
           ) -> tuple[torch.Tensor, str]:
    """The query weights on the last block's tokens: the CLS token, the region's patches
    (weighted by their share of the region) or all tokens."""
    last = records[-1]
    grid = tuple(last.grid)  # type: ignore[arg-type]
    if cls:
        start = torch.zeros(last.tokens, dtype=torch.float64)
        start[0] = 1.0
        return start, "cls token"
    if mask is None or bool(mask.all()):
        weights = torch.ones(grid, dtype=torch.float64)
        query = "all tokens"
    else:
        weights = F.adaptive_avg_pool3d(mask.detach().double().cpu()[None, None], grid)[0, 0]
        query = "region tokens"
    weights = weights / weights.sum()
    return (weights.reshape(-1) if last.kind == "global" else weights), query


def _to_volume(token_map: torch.Tensor, shape: tuple[int, ...], interpolation: str
               ) -> np.ndarray:
    mode = "nearest-exact" if interpolation == "nearest" else "trilinear"
    kwargs = {} if mode == "nearest-exact" else {"align_corners": False}
    grid = token_map.float().cpu()[None, None]
    return F.interpolate(grid, size=tuple(shape), mode=mode, **kwargs)[0, 0].numpy() \
        .astype(np.float32)
