"""Attention explanations of transformers: rollout, raw and gradient-weighted attention against
hand computations on the attention matrices, Swin windows laid back onto the grid, maps that
follow a lesion, refusals, and the user's model left as it was."""

import numpy as np
import pytest
import torch
from monai.networks.nets import UNETR, SwinUNETR, ViT

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.attribution import METHODS, attention_map, attribute, load_model

SIZE = 32
PATCH = 8
GRID = (SIZE // PATCH,) * 3


def _vit(classification=True, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(in_channels=1, img_size=SIZE, patch_size=PATCH, hidden_size=48, mlp_dim=96,
                num_layers=2, num_heads=4, classification=classification, num_classes=2)
    return ViT(**{**args, **kw}).eval()


def _volume(seed=1):
    return np.random.default_rng(seed).random((SIZE,) * 3).astype(np.float32)


def _saved_attention(net, volume):
    """Each block's attention (1, heads, N, N) as MONAI itself saves it (``save_attn`` on a
    copy with the same weights), independent of the hooks under test."""
    twin = ViT(1, SIZE, PATCH, hidden_size=48, mlp_dim=96, num_layers=len(net.blocks),
               num_heads=4, classification=net.classification, num_classes=2,
               proj_type=net.patch_embedding.proj_type, save_attn=True).eval()
    twin.load_state_dict(net.state_dict())
    with torch.no_grad():
        twin(torch.from_numpy(volume)[None, None])
    return [blk.attn.att_mat[0].double().numpy() for blk in twin.blocks]


def _rollout_by_hand(attentions):
    """Abnar & Zuidema: A_l = 0.5 mean_heads + 0.5 I, rows normalised, R = A_L ... A_1."""
    rolled = np.eye(attentions[0].shape[-1])
    for att in attentions:
        a = 0.5 * att.mean(axis=0) + 0.5 * np.eye(att.shape[-1])
        a /= a.sum(axis=-1, keepdims=True)
        rolled = a @ rolled
    return rolled


def _on_tokens(result_map, grid=GRID):
    """The map sampled once per patch (it is constant on each patch), as (z, y, x) tokens."""
    steps = [s // g for s, g in zip(result_map.shape, grid, strict=True)]
    return result_map[::steps[0], ::steps[1], ::steps[2]]


def test_rollout_equals_the_hand_computation_on_a_two_block_vit():
    net, volume = _vit(), _volume()
    rolled = _rollout_by_hand(_saved_attention(net, volume))
    result = attention_map(net, volume, "attention_rollout")
    expected = rolled[0, 1:].reshape(GRID)  # the CLS row, patches in (z, y, x) raster order
    np.testing.assert_allclose(_on_tokens(result.map), expected, rtol=1e-5, atol=1e-7)
    # nearest: every voxel of a patch carries the patch's value
    block = result.map[:PATCH, PATCH:2 * PATCH, :PATCH]
    assert np.ptp(block) == 0
    assert result.map.dtype == np.float32 and result.map.shape == volume.shape
    assert result.params["patch_grid"] == list(GRID) and result.params["query"] == "cls token"
    assert result.params["blocks"] == ["blocks.0.attn", "blocks.1.attn"]
    # rollout through the first block only
    first = attention_map(net, volume, "attention_rollout", block=0)
    np.testing.assert_allclose(_on_tokens(first.map),
                               _rollout_by_hand(_saved_attention(net, volume)[:1])[0, 1:]
                               .reshape(GRID), rtol=1e-5, atol=1e-7)


def test_rollout_of_a_backbone_without_cls_is_the_mean_row():
    """No CLS token (a ViT backbone, as inside UNETR): the mean over all query rows; the
    perceptron patch embedding orders its tokens like the convolution."""
    net, volume = _vit(classification=False, proj_type="perceptron"), _volume(2)
    rolled = _rollout_by_hand(_saved_attention(net, volume))
    result = attention_map(net, volume, "attention_rollout")
    np.testing.assert_allclose(_on_tokens(result.map), rolled.mean(axis=0).reshape(GRID),
                               rtol=1e-5, atol=1e-8)
    assert result.params["query"] == "all tokens" and result.target is None


def test_raw_attention_is_one_block_and_head():
    net, volume = _vit(), _volume()
    saved = _saved_attention(net, volume)
    head = attention_map(net, volume, "raw_attention", block=0, head=2)
    np.testing.assert_allclose(_on_tokens(head.map), saved[0][2, 0, 1:].reshape(GRID),
                               rtol=1e-5, atol=1e-7)
    mean = attention_map(net, volume, "raw_attention")  # last block, heads' mean
    np.testing.assert_allclose(_on_tokens(mean.map), saved[1].mean(0)[0, 1:].reshape(GRID),
                               rtol=1e-5, atol=1e-7)
    assert head.params["block"] == 0 and head.params["head"] == 2


def test_gradient_weighted_attention_follows_chefer():
    """R = (I + A_2) (I + A_1), A_l = mean_heads relu(grad * attention), CLS row; the gradients
    of the class score taken here with the test's own hooks on MONAI's attention dropout."""
    net, volume = _vit(), _volume()
    target = 0
    kept = []

    def hook(_m, inputs, _out):
        inputs[0].retain_grad()
        kept.append(inputs[0])

    handles = [blk.attn.drop_weights.register_forward_hook(hook) for blk in net.blocks]
    logits = net(torch.from_numpy(volume)[None, None])[0]
    logits[0, target].backward()
    for h in handles:
        h.remove()
    net.zero_grad(set_to_none=True)
    relevance = np.eye(kept[0].shape[-1])
    for att in kept:
        weighted = np.clip((att.grad * att).detach()[0].double().numpy(), 0, None).mean(0)
        relevance = relevance + weighted @ relevance
    result = attention_map(net, volume, "attention_gradcam", target=target)
    np.testing.assert_allclose(_on_tokens(result.map), relevance[0, 1:].reshape(GRID),
                               rtol=1e-4, atol=1e-9)
    assert result.target == target and not result.signed
    # another class, another map
    other = attention_map(net, volume, "attention_gradcam", target=1)
    assert not np.allclose(other.map, result.map)


def _swin(seed=0, depths=(2, 2, 2, 2)):
    torch.manual_seed(seed)
    return SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=depths,
                     num_heads=(3, 3, 3, 3), window_size=3, norm_name="batch").eval()


def _swin_attention(net, volume, weighted=False):
    """Per block (in order): the stage grid, window and shift, and the heads' mean of the window
    attention (``weighted``: of relu(gradient x attention) for the summed logit of channel 1),
    from the test's own hooks."""
    found, kept = [], []

    def on_block(block, args):
        found.append({"grid": tuple(args[0].shape[1:4]), "window": tuple(block.window_size),
                      "shift": tuple(block.shift_size)})

    def on_attention(_m, inputs, _out):
        if weighted:
            inputs[0].retain_grad()
            kept.append(inputs[0])
        else:
            found[-1]["attention"] = inputs[0].detach().mean(1).double().numpy()

    handles = []
    for blk in net.swinViT.modules():
        if type(blk).__name__ == "SwinTransformerBlock":
            handles.append(blk.register_forward_pre_hook(on_block))
            handles.append(blk.attn.attn_drop.register_forward_hook(on_attention))
    with torch.set_grad_enabled(weighted):
        out = net(torch.from_numpy(volume)[None, None])
    if weighted:
        out[0, 1].sum().backward()
        net.zero_grad(set_to_none=True)
        for blk, att in zip(found, kept, strict=True):
            blk["attention"] = np.clip((att.grad * att).detach().double().numpy(), 0,
                                       None).mean(1)
    for h in handles:
        h.remove()
    return found


def _window_tokens(grid, window, shift):
    """Token index (on the padded grid) of every window position: numpy rolls and reshapes."""
    window = [min(w, g) for w, g in zip(window, grid, strict=True)]
    shift = [0 if g <= w else s for w, g, s in zip(window, grid, shift, strict=True)]
    padded = [-(-g // w) * w for g, w in zip(grid, window, strict=True)]
    index = np.arange(np.prod(padded)).reshape(padded)
    index = np.roll(index, [-s for s in shift], axis=(0, 1, 2))
    nz, ny, nx = (p // w for p, w in zip(padded, window, strict=True))
    wz, wy, wx = window
    tokens = index.reshape(nz, wz, ny, wy, nx, wx).transpose(0, 2, 4, 1, 3, 5)
    return tokens.reshape(nz * ny * nx, wz * wy * wx), padded


def _numpy_readout(blocks, mix):
    """Uniform query weights on the last block's tokens carried back to the first grid: each
    window's rows scattered by token index with ``mix(attention)``; a patch merging splits each
    coarse token among its 8."""
    v = None
    for blk in reversed(blocks):
        grid = blk["grid"]
        if v is None:
            v = np.full(grid, 1.0 / np.prod(grid))
        elif v.shape != grid:
            v = np.repeat(np.repeat(np.repeat(v, 2, 0), 2, 1), 2, 2)[:grid[0], :grid[1],
                                                                     :grid[2]] / 8
        tokens, padded = _window_tokens(grid, blk["window"], blk["shift"])
        flat = np.zeros(np.prod(padded))
        flat.reshape(padded)[:grid[0], :grid[1], :grid[2]] = v
        out = np.zeros_like(flat)
        for w, idx in enumerate(tokens):
            out[idx] += flat[idx] @ mix(blk["attention"][w])
        v = out.reshape(padded)[:grid[0], :grid[1], :grid[2]]
    return v


def _abnar(attention):
    mix = 0.5 * attention + 0.5 * np.eye(len(attention))
    return mix / mix.sum(axis=1, keepdims=True)


def test_swin_rollout_lays_the_windows_back_through_shift_and_padding():
    """The rollout of a SwinUNETR (window 3: padded stages, shifted blocks, four patch
    mergings) against a numpy rollout that scatters each window's rows by token index."""
    net, volume = _swin(), _volume(3)
    expected = _numpy_readout(_swin_attention(net, volume), _abnar)
    result = attention_map(net, volume, "attention_rollout", region=np.ones(volume.shape, bool))
    assert result.params["patch_grid"] == [16, 16, 16] and len(result.params["blocks"]) == 8
    np.testing.assert_allclose(_on_tokens(result.map, (16,) * 3), expected, rtol=1e-5,
                               atol=1e-12)


def test_swin_gradient_weighted_attention_follows_chefer():
    """The same scatter with I + relu(gradient x attention), less the identity path (the query
    weights carried through the mergings alone)."""
    net, volume = _swin(), _volume(3)
    blocks = _swin_attention(net, volume, weighted=True)
    gained = _numpy_readout(blocks, lambda a: np.eye(len(a)) + a)
    identity = _numpy_readout(blocks, lambda a: np.eye(len(a)))
    result = attention_map(net, volume, "attention_gradcam", region=np.ones(volume.shape, bool))
    np.testing.assert_allclose(_on_tokens(result.map, (16,) * 3),
                               np.clip(gained - identity, 0, None), rtol=1e-4, atol=1e-12)


def _bright_patch_vit():
    """A one-block ViT built by hand whose CLS token attends to the brightest patches: the
    patch embedding writes the patch's mean m as (m, -m, 1, -1), so the layer norm keeps a
    monotone function of m in the first channel; the key is that channel, the CLS query a
    large constant."""
    net = ViT(1, SIZE, PATCH, hidden_size=4, mlp_dim=4, num_layers=1, num_heads=1,
              classification=True, num_classes=2).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        conv = net.patch_embedding.patch_embeddings
        conv.weight[0] = 1.0 / PATCH**3
        conv.weight[1] = -1.0 / PATCH**3
        conv.bias[2], conv.bias[3] = 1.0, -1.0
        for norm in (net.blocks[0].norm1, net.blocks[0].norm2, net.norm):
            norm.weight.fill_(1.0)
        net.cls_token[0, 0, 2], net.cls_token[0, 0, 3] = 1.0, -1.0
        qkv = net.blocks[0].attn.qkv.weight  # rows: q (0..3), k (4..7), v (8..11)
        qkv[0, 2] = 40.0  # the CLS query: its channel 2, scaled up
        qkv[4, 0] = 1.0  # every key: channel 0, monotone in the patch's brightness
        net.classification_head[0].weight[1, 0] = 1.0
    return net


def _lesion(centre):
    rng = np.random.default_rng(4)
    volume = 0.1 * rng.random((SIZE,) * 3).astype(np.float32)
    zz, yy, xx = np.indices(volume.shape)
    mask = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= 3**2
    volume[mask] += 1.0
    return volume, mask


@pytest.mark.parametrize("method", ["attention_rollout", "raw_attention"])
def test_the_map_moves_with_the_lesion(method):
    """A lesion at two places, off the diagonal (a transposed token order would show): the
    hottest voxel is in the lesion each time, and the map's centre of mass moves with it."""
    net = _bright_patch_vit()
    centres = [(4, 12, 27), (20, 27, 4)]
    masses = []
    for centre in centres:
        volume, mask = _lesion(centre)
        result = attention_map(net, volume, method, spacing=(2.0, 1.0, 1.0))
        peak = np.unravel_index(np.argmax(result.map), result.map.shape)
        assert mask[peak] or np.linalg.norm(np.subtract(peak, centre)) < PATCH, (centre, peak)
        weights = result.map / result.map.sum()
        masses.append([float((weights * i).sum()) for i in np.indices(result.map.shape)])
        assert result.params["patch_mm"] == [16.0, 8.0, 8.0]
    moved = np.subtract(masses[1], masses[0])
    assert np.all(np.sign(moved) == np.sign(np.subtract(centres[1], centres[0])))
    assert np.all(np.abs(moved) > 4)


def _hooks(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in net.modules())


def _state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("method", ["attention_rollout", "raw_attention", "attention_gradcam"])
def test_the_users_model_is_left_as_it_was(method):
    net, volume = _vit(), _volume()
    before = _state(net)
    user_hook = net.blocks[0].register_forward_hook(lambda *a: None)  # the user's own hook stays
    attention_map(net, volume, method)
    with pytest.raises(XaimedError, match="block 7 does not exist"):
        attention_map(net, volume, method, block=7)
    assert _hooks(net) == 1
    user_hook.remove()
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())
    assert not any(blk.attn.save_attn for blk in net.blocks)


def test_flash_attention_is_read_through_a_copy():
    net, volume = _vit(), _volume()
    plain = attention_map(net, volume, "attention_rollout")
    for blk in net.blocks:
        blk.attn.use_flash_attention = True
    flash = attention_map(net, volume, "attention_rollout")
    np.testing.assert_allclose(flash.map, plain.map, rtol=1e-5)
    assert all(blk.attn.use_flash_attention for blk in net.blocks)  # the user's, untouched
    assert flash.params["read_through_copy"] == ["blocks.0.attn: flash attention",
                                                 "blocks.1.attn: flash attention"]


def test_a_cnn_is_refused_with_the_methods_to_use(tiny):
    volume = _volume()[:12, :14, :16]
    before = _state(tiny)
    for method in ("attention_rollout", "raw_attention", "attention_gradcam"):
        with pytest.raises(XaimedError, match="no self-attention blocks") as info:
            attribute(tiny, volume, method)
        assert "gradcam" in str(info.value) and "integrated_gradients" in str(info.value)
    assert _hooks(tiny) == 0
    assert all(torch.equal(v, tiny.state_dict()[k]) for k, v in before.items())
    with pytest.raises(XaimedError, match="no self-attention blocks"):
        attribute("bundled", _volume(), "attention_rollout")


def test_bad_requests_are_refused(tmp_path):
    net, volume = _vit(), _volume()
    with pytest.raises(XaimedError, match="head 4 does not exist"):
        attention_map(net, volume, "attention_rollout", head=4)
    with pytest.raises(XaimedError, match="interpolation must be"):
        attention_map(net, volume, "raw_attention", interpolation="cubic")
    with pytest.raises(XaimedError, match="takes"):
        attribute(net, volume, "attention_rollout", steps=4)
    with pytest.raises(XaimedError, match="a region applies to segmentation"):
        attention_map(net, volume, "attention_rollout", region=np.ones(volume.shape))
    with pytest.raises(XaimedError, match="needs a score"):
        attention_map(_vit(classification=False), volume, "attention_gradcam")
    traced = torch.jit.trace(net, torch.zeros(1, 1, SIZE, SIZE, SIZE), strict=False)
    path = tmp_path / "vit.pt"
    torch.jit.save(traced, str(path))
    with pytest.raises(XaimedError, match="TorchScript"):
        attention_map(load_model(path), volume, "attention_rollout")


def test_attribute_reaches_the_attention_methods():
    assert {"raw_attention", "attention_rollout", "attention_gradcam"} <= set(METHODS)
    net, volume = _vit(), _volume()
    via = attribute(net, volume, "attention_rollout", block=0)
    direct = attention_map(net, volume, "attention_rollout", block=0)
    np.testing.assert_array_equal(via.map, direct.map)
    assert via.method == "attention_rollout" and via.params["block"] == 0


def test_unetr_reads_the_region_tokens_and_trilinear_smooths():
    torch.manual_seed(0)
    net = UNETR(1, 2, img_size=SIZE, feature_size=8, hidden_size=48, mlp_dim=96,
                num_heads=4).eval()
    volume = _volume()
    region = np.zeros(volume.shape, bool)
    region[:16, :16, 16:] = True  # one patch of the 2x2x2 grid
    near = attention_map(net, volume, "attention_rollout", region=region)
    smooth = attention_map(net, volume, "attention_rollout", region=region,
                           interpolation="trilinear")
    assert near.params["query"] == "region tokens" and near.params["region"] == "given mask"
    assert len(np.unique(near.map)) == 8 and len(np.unique(smooth.map)) > 8
    np.testing.assert_allclose(smooth.map.mean(), near.map.mean(), rtol=0.05)
    grad = attention_map(net, volume, "attention_gradcam", region=region)
    assert grad.params["channel"] == 1 and np.all(grad.map >= 0) and grad.map.any()
