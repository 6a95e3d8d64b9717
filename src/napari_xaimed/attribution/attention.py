"""Attention-based explanations of transformers (MONAI ``ViT``, ``UNETR``, ``SwinUNETR``),
mapped from the token grid back onto the volume.

Three methods, all read from the attention probabilities ``A_l`` of the blocks (rows: query
tokens, columns: the key tokens they draw from; see
:mod:`~napari_xaimed.attribution.attention_capture`):

``raw_attention``
    The attention of one block (``block``, default the last) and one head (``head``, default
    the heads' mean): how much the query tokens draw from each token in that block alone.
``attention_rollout``
    Abnar & Zuidema (2020), "Quantifying Attention Flow in Transformers", ACL: the residual
    connection is folded in as ``Ã_l = 0.5 A_l + 0.5 I`` (rows renormalised), and the blocks
    are chained, ``R = Ã_L ... Ã_1``: how much each input patch flows into the query tokens
    through blocks ``1..L`` (``L`` = ``block``).
``attention_gradcam``
    Gradient-weighted attention, Chefer, Gur & Wolf (2021), "Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV (the
    gradient-times-attention rule that replaces the LRP relevance of their CVPR 2021 paper
    "Transformer Interpretability Beyond Attention Visualization"): ``Ā_l = E_h[(∇A_l ⊙ A_l)^+]``
    with the gradient of the explained score, chained as ``R = (I + Ā_L) ... (I + Ā_1)``; the
    identity's own share (the query tokens themselves) is taken off, leaving what reached them
    through attention.

The map is a row of ``R`` read out for the query tokens: the CLS token for a classification
``ViT`` (its row, as in both papers); otherwise (``UNETR``, ``SwinUNETR``, a ``ViT`` backbone)
the mean of the rows of the query tokens in the explained region (the ``region`` mask, or the
model's own prediction of the target channel, each patch weighted by its share of the region),
or of all tokens when there is no region. Only a vector ``v`` is carried, ``v <- v Ã_l`` from
the last block to the first, never the ``N x N`` product, so Swin's stage-0 grid (``48^3`` tokens
at ``96^3``) costs one small matrix product per window. For Swin the window attention is laid
back through the cyclic shift and padding of each block, and across a patch merging each coarse
token's share is split evenly among the ``2 x 2 x 2`` tokens it was merged from. The map counts
only the transformer's token mixing: SwinUNETR's and UNETR's convolutional skip paths from the
input are not explained by it.

Tokens to voxels: each token is a patch of the model's input, so the map on the token grid is
resized to the volume's grid with ``nearest`` by default (a patch's value on every voxel it
covers; attention says nothing about where inside a patch), or ``trilinear`` for a smoother
picture that blurs across patch borders. The layer's ``scale`` (the volume's spacing) then puts
it in millimetres; ``params["patch_mm"]`` says how large a token is.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.attribution.attention_capture import (
    ATTENTION_BLOCKS,
    attention_modules,
    capturing,
    hyena_stages,
    patch_grid,
    readable,
)
from napari_xaimed.attribution.attention_flow import (  # noqa: F401 - also importable from here, as before
    INSTEAD,
    _as_grid,
    _included,
    _start,
    _to_volume,
    carry,
)
from napari_xaimed.attribution.methods import METHODS, Method
from napari_xaimed.attribution.result import Attribution
from napari_xaimed.models.device import forward_error, pick_device
from napari_xaimed.models.loading import LoadedModel, Scores, load_model
from napari_xaimed.models.network import is_scripted
from napari_xaimed.models.preprocess import Preprocessing, to_input

_PARAMS = {"block": -1, "head": None, "interpolation": "nearest"}


#: The attention methods, entries of :data:`~napari_xaimed.attribution.METHODS`.
ATTENTION_METHODS: dict[str, Method] = {m.name: m for m in (
    Method("raw_attention", False, dict(_PARAMS),
           "attention of one transformer block (block) and head (default: their mean)"),
    Method("attention_rollout", False, dict(_PARAMS),
           "attention rollout through blocks 0..block (Abnar & Zuidema 2020)"),
    Method("attention_gradcam", False, dict(_PARAMS),
           "gradient-weighted attention through blocks 0..block (Chefer et al. 2021)"),
)}


INTERPOLATIONS = ("nearest", "trilinear")


def _check(method: str, block: Any, head: Any, interpolation: str) -> None:
    if method not in ATTENTION_METHODS:
        raise XaimedError(f"unknown attention method {method!r}: choose from "
                          f"{', '.join(ATTENTION_METHODS)}.")
    if isinstance(block, bool) or not isinstance(block, int | np.integer):
        raise XaimedError(f"block must be an integer (0 = first, -1 = last), got {block!r}.")
    if head is not None and (isinstance(head, bool) or not isinstance(head, int | np.integer)
                             or head < 0):
        raise XaimedError(f"head must be None (the heads' mean) or an index >= 0, got {head!r}.")
    if interpolation not in INTERPOLATIONS:
        raise XaimedError(f"interpolation must be one of {INTERPOLATIONS}, got "
                          f"{interpolation!r}.")


def refuse_unreadable(method: str, network: torch.nn.Module) -> None:
    """A clear error for a model the attention methods cannot read: TorchScript (no hooks), no
    attention block (a CNN), or Swin stages without attention (Hyena)."""
    if is_scripted(network):
        raise XaimedError(
            f"{method} reads the attention blocks through hooks, and a TorchScript model runs "
            "without them: pass the network as a torch.nn.Module, or as a state dict with a "
            "JSON config naming the network (load_model).")
    if not attention_modules(network):
        raise XaimedError(
            f"{method} explains transformers, and the model ({type(network).__name__}) has no "
            f"self-attention blocks ({ATTENTION_BLOCKS}): use {INSTEAD} instead.")
    hyena = hyena_stages(network)
    if hyena and method != "raw_attention":
        raise XaimedError(
            f"{method} chains the attention of every block, and {hyena[0]!r} is a Hyena block "
            "with no attention: use raw_attention on one attention block, or gradcam.")


def _score(out: torch.Tensor, target: int | None, region: np.ndarray | None, volume_shape: tuple
           ) -> tuple[torch.Tensor | None, int | None, torch.Tensor | None, dict[str, Any]]:
    """The explained score, the target, the query region on the model's output grid (None:
    all tokens, or the CLS token) and what was chosen, from the model's output."""
    if out.ndim == 2:
        if region is not None:
            raise XaimedError("a region applies to segmentation models; this model outputs "
                              "class scores: leave the region out.")
        n = out.shape[1]
        chosen = int(out.argmax(dim=1)) if target is None else int(target)
        if not 0 <= chosen < n:
            raise XaimedError(f"target class {chosen} does not exist: the model has {n} classes "
                              f"(0..{n - 1}).")
        return out[0, chosen], chosen, None, {}
    if out.ndim == 5:
        channels = out.shape[1]
        channel = 1 if target is None and channels > 1 else int(target or 0)
        if not 0 <= channel < channels:
            raise XaimedError(f"target channel {channel} does not exist: the model has "
                              f"{channels} output channels.")
        info: dict[str, Any] = {"channel": channel}
        if region is not None:
            if np.shape(region) != tuple(volume_shape):
                raise XaimedError(f"the region {np.shape(region)} must have the volume's shape "
                                  f"{tuple(volume_shape)}.")
            if not np.any(region):
                raise XaimedError("the region is empty: draw or pick a non-empty mask.")
            mask = torch.from_numpy(np.ascontiguousarray(region != 0)).float()[None, None]
            mask = F.interpolate(mask, size=tuple(out.shape[2:]), mode="nearest")[0, 0]
            mask = mask.to(out.device)
            info["region"] = "given mask"
        else:
            with torch.no_grad():
                mask = ((out.argmax(dim=1)[0] == channel) if channels > 1
                        else (out[0, 0] > 0)).float()
            info["region"] = "model prediction"
            if not bool(mask.any()):
                mask = torch.ones_like(mask)
                info["region"] = "all voxels (the model predicts none of this channel)"
        return (out[0, channel] * mask).sum(), channel, mask, info
    if region is not None:
        raise XaimedError("a region needs a segmentation model; this model's output is "
                          f"{tuple(out.shape)}.")
    return None, None, None, {}


def attention_map_steps(
    model: Any,
    volume: np.ndarray,
    method: str = "attention_rollout",
    *,
    block: int = -1,
    head: int | None = None,
    interpolation: str = "nearest",
    target: int | None = None,
    region: np.ndarray | None = None,
    device: str | torch.device = "auto",
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    spacing: Any = None,
    batch_size: int | None = None,
    autocast: str | None = None,
    seed: int = 0,
) -> Steps[Attribution]:
    """Generator form of :func:`attention_map` (yields progress, returns the attribution)."""
    started = time.perf_counter()
    _check(method, block, head, interpolation)
    if autocast is not None:
        raise XaimedError(f"{method} runs in full precision: leave autocast out (None).")
    volume = as_volume(volume, "volume")
    spacing_mm = as_spacing(spacing)
    loaded: LoadedModel = load_model(model)
    prep = loaded.preprocessing.overridden(preprocessing)
    dev = pick_device(device)
    network = loaded.module.to(dev).eval()
    refuse_unreadable(method, network)
    runner, switched_off = readable(network)
    x = to_input(volume, prep, dev)
    graph = method == "attention_gradcam"
    yield Progress(0, 3, f"{method}: forward pass")
    xg = x.detach().clone().requires_grad_(graph)
    with capturing(runner, graph=graph, head=head) as records:
        try:
            with torch.set_grad_enabled(graph):
                out = Scores(runner)(xg)
        except XaimedError:
            raise
        except Exception as exc:  # noqa: BLE001 - out of memory, or an input that does not fit
            raise forward_error(exc, x) from exc
        score, chosen, mask, info = _score(out, target, region, volume.shape)
        chosen_blocks = _included(records, method, int(block), head)
        if graph:
            if score is None:
                raise XaimedError(
                    f"{method} needs a score to take the gradient of: class scores (batch, "
                    "classes) or a segmentation (batch, channels, z, y, x); this model outputs "
                    f"{tuple(out.shape)}. raw_attention and attention_rollout need none.")
            yield Progress(1, 3, f"{method}: backward pass")
            # to the first block read: the gradient passes every later one on its way
            first = chosen_blocks[0].probs
            # (the hooks on each block's probabilities keep the weighted attention)
            torch.autograd.grad(score, [first], allow_unused=True)
            for r in records:
                r.probs = None  # drop the graph
        scores = ([float(v) for v in out[0].detach().float().cpu()] if out.ndim == 2
                  else [float(score.detach())] if score is not None else [])
        del out, score
    cls = _as_grid(chosen_blocks, patch_grid(runner, x))
    yield Progress(2, 3, f"{method}: reading the attention out")
    start, query = _start(chosen_blocks, cls, mask)
    token_map = carry(chosen_blocks, method, start.to(dev), cls)
    if method == "attention_gradcam":
        # take off the identity path: the query tokens' own share, not reached by attention
        token_map = (token_map - carry(chosen_blocks, "identity", start.to(dev), cls)) \
            .clamp(min=0)
    _check_map(token_map, method)
    grid = tuple(int(g) for g in token_map.shape)
    result_map = _to_volume(token_map, volume.shape, interpolation)
    patch_mm = [round(s * n / g, 4) for s, n, g in zip(spacing_mm, volume.shape, grid,
                                                       strict=True)]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    yield Progress(3, 3, f"{method}: done")
    params: dict[str, Any] = {
        "block": int(block), "head": head, "interpolation": interpolation,
        "blocks": [r.name for r in chosen_blocks], "patch_grid": list(grid),
        "patch_mm": patch_mm, "query": query, "preprocessing": prep.to_dict(),
        "batch_size": 1, "autocast": None, "seed": seed, **info,
        "target": "predicted" if target is None else "given"}
    if switched_off:
        params["read_through_copy"] = switched_off
    return Attribution(map=result_map, method=method, signed=False, target=chosen,
                       params=params, scores=scores, seconds=time.perf_counter() - started,
                       device=str(dev), model=loaded.provenance())


def _check_map(token_map: torch.Tensor, method: str) -> None:
    if not bool(torch.isfinite(token_map).all()):
        raise XaimedError(f"{method} gave NaN or infinite values on this model: its attention "
                          "or gradients overflow here.")
    if not bool(token_map.any()):
        why = ("the score's gradient gives no attention a positive weight: pick another target, "
               "block, or attention_rollout" if method == "attention_gradcam"
               else "the query tokens draw nothing from the patches")
        raise XaimedError(f"{method} gave a map of zeros on this volume: {why}.")


def attention_map(model: Any, volume: np.ndarray, method: str = "attention_rollout",
                  **kwargs: Any) -> Attribution:
    """Explain a transformer's decision on ``volume`` from its attention.

    Parameters
    ----------
    model : torch.nn.Module, path, LoadedModel
        A MONAI ``ViT``, ``UNETR``, ``SwinUNETR`` or any module built from MONAI's ``SABlock`` /
        Swin ``WindowAttention`` (see :func:`~napari_xaimed.attribution.load_model`). It is not
        changed: the hooks are removed afterwards, and a model with flash attention or gradient
        checkpointing is read through a copy.
    volume : numpy.ndarray
        3D ``(z, y, x)``.
    method : {"attention_rollout", "raw_attention", "attention_gradcam"}
        See the module docstring.
    block : int
        Raw attention: the block shown; rollout and gradient-weighted attention: the last block
        chained (blocks ``0..block``). Negative counts from the end (``-1``: the last). Blocks
        are counted in the order they run (Swin: through all stages).
    head : int, optional
        One attention head in every block read; default the mean over heads.
    interpolation : {"nearest", "trilinear"}
        From the token grid to the volume's grid (see the module docstring).
    target : int, optional
        Classifier: the class whose score attention_gradcam differentiates (default the
        predicted class; rollout and raw attention do not depend on it). Segmentation: the
        output channel (default 1, or 0 with a single channel).
    region : numpy.ndarray, optional
        Segmentation models: a mask on the volume's grid; its patches are the query tokens
        (default: the model's prediction of the channel, or all tokens when it predicts none).
    device, preprocessing, spacing, batch_size, autocast, seed
        As for :func:`~napari_xaimed.attribution.attribute` (one pass, full precision; the
        spacing only sizes ``params["patch_mm"]``).

    Returns
    -------
    Attribution
        ``map`` float32 with the volume's shape (unsigned); ``params`` with ``block``, ``head``,
        the blocks read, ``patch_grid``, ``patch_mm`` and the ``query`` tokens.

    Examples
    --------
    >>> from monai.networks.nets import ViT
    >>> net = ViT(1, img_size=32, patch_size=8, hidden_size=48, mlp_dim=96, num_layers=2,
    ...           num_heads=4, classification=True)
    >>> result = attention_map(net, np.random.rand(32, 32, 32), "attention_rollout")
    >>> result.map.shape, result.params["patch_grid"]
    ((32, 32, 32), [4, 4, 4])
    """
    return run_steps(attention_map_steps(model, volume, method, **kwargs))


# The attention methods join the registry that attribute(), the widgets and the cohort read.
METHODS.update(ATTENTION_METHODS)
