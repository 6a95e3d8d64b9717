"""Sliding-window attribution of segmentation networks on volumes larger than memory.

The whole-volume model is MONAI's sliding-window model: with windows ``w`` at MONAI's
positions (``dense_patch_slices`` with its scan interval ``int(roi * (1 - overlap))``, the
last window clamped to the edge, axes smaller than the window zero-padded on both sides) and
its importance map ``imp`` (``compute_importance_map``, gaussian with sigma_scale 0.125, or
constant),

    out(v) = sum_w imp_w(v) net(x_w)(v) / N(v),    N(v) = sum_w imp_w(v),

what ``sliding_window_inference(x, roi, sw, net, overlap, mode)`` computes. The target is
``T = sum_{v in region} out[channel](v)``, the in-memory ``RegionScore``. ``T`` is a sum of
window terms ``t_w(x_w) = sum_v (imp_w R / N)(v) net(x_w)[channel](v)``, each depending on its
own window's input only, and gradient, input x gradient and Integrated Gradients are linear in
the target: the attribution of ``T`` is the sum over windows of the attribution of ``t_w``,
accumulated on the input grid. (Saliency's absolute value and the input / baseline factors
are applied to the accumulated gradient, once all windows that touch a plane have run.)

Memory stays bounded: the windows run band by band along z (a band = the windows of one z
start); only the input planes of the current band are read, and the normaliser ``N``, the
region and the gradient are kept for the planes that later windows still touch. Finished
planes are written to a Zarr store. The default region (where the sliding-window model
predicts the channel) comes from a lazy forward pass over the same windows, also written to a
Zarr store band by band.

SmoothGrad and its relatives are not done: their absolute value or square applies to each
noisy sample's gradient of the whole volume, so every sample would need its own accumulator,
and the noise would have to be one field across overlapping windows.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.tempstores import make_folder, remove_at_exit
from napari_xaimed.models.windows import (
    SIGMA_SCALE,
    PaddedReader,
    WindowGrid,
    _batches,
    _crop,
    _shift,
    _spans,
    _stack,
    forward_bands,
    predicted_mask,
    prepare_windows,
)

#: Methods explained window by window (linear in the target).
WINDOW_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")


def gradient_bands(
    net: torch.nn.Module,
    grid: WindowGrid,
    read_input: PaddedReader,
    read_region: PaddedReader,
    channel: int,
    method: str,
    *,
    baseline: float = 0.0,
    steps: int = 32,
    step_batch: int = 32,
    sw_batch_size: int = 1,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor] | dict[str, Any]]:
    """The attribution of ``T`` (see the module's docstring), band by band.

    The input, the window weights ``R / N`` and the gradient are kept for one window's depth
    of planes (fixed buffers, filled a slab at a time). Windows with no region voxel have a
    zero term and are skipped. Yields ``(start, stop, map)`` for volume planes
    ``start:stop`` in order, and last a dict with the score ``T`` and the number of windows
    run.
    """
    from captum.attr._utils.approximation_methods import approximation_parameters

    if method == "integrated_gradients":
        sizes_fn, alphas_fn = approximation_parameters("gausslegendre")
        sizes, alphas = sizes_fn(int(steps)), alphas_fn(int(steps))
    rz, ry, rx = grid.roi
    step = read_input.slab
    bands = grid.bands()
    planes = (rz, *grid.padded[1:])
    dev = grid.importance.device
    x = torch.zeros(planes, dtype=torch.float32, device=dev)
    weight = torch.zeros(planes, dtype=torch.float32, device=dev)
    grad = torch.zeros(planes, dtype=torch.float32, device=dev)
    lo = hi = bands[0][0]
    score = 0.0
    done = run = 0
    for k, (sz, starts) in enumerate(bands):
        for a, b in _spans(hi, sz + rz, step):
            x[a - lo:b - lo] = read_input(a, b)
            weight[a - lo:b - lo] = read_region(a, b)
            weight[a - lo:b - lo] /= grid.normaliser(a, b)
            grad[a - lo:b - lo] = 0
        hi = sz + rz
        active = [s for s in starts
                  if bool(weight[s[0] - lo:s[0] - lo + rz, s[1]:s[1] + ry, s[2]:s[2] + rx].any())]
        run += len(active)
        for batch in _batches(active, sw_batch_size):
            xs = _stack(x, lo, batch, grid.roi)[:, None]
            ws = _stack(weight, lo, batch, grid.roi) * grid.importance
            if method == "integrated_gradients":
                valid = torch.stack([grid.valid(s) for s in batch])[:, None].to(xs.dtype)
                base = baseline * valid  # MONAI pads every interpolated input with zeros
                total = torch.zeros_like(xs)
                for first in range(0, int(steps), int(step_batch)):
                    a_k = torch.tensor(alphas[first:first + step_batch], dtype=xs.dtype,
                                       device=xs.device)
                    s_k = torch.tensor(sizes[first:first + step_batch], dtype=xs.dtype,
                                       device=xs.device)
                    n = len(a_k)
                    # (steps, windows, 1, z, y, x) -> one batch
                    points = (base[None] + a_k.view(-1, 1, 1, 1, 1, 1) * (xs - base)[None])
                    points = points.reshape(-1, *xs.shape[1:]).requires_grad_(True)
                    out = net(points)
                    term = (out[:, channel].reshape(n, len(batch), rz, ry, rx) * ws[None])
                    g = torch.autograd.grad(term.sum(), points)[0]
                    total += (g.reshape(n, *xs.shape) * s_k.view(-1, 1, 1, 1, 1, 1)).sum(0)
                with torch.no_grad():
                    score += float((net(xs)[:, channel] * ws).double().sum())
                g = total
            else:
                xs = xs.requires_grad_(True)
                out = net(xs)
                term = (out[:, channel] * ws).sum()
                g = torch.autograd.grad(term, xs)[0]
                score += float(term.detach().double())
            for (wz, wy, wx), gw in zip(batch, g[:, 0].detach(), strict=True):
                grad[wz - lo:wz - lo + rz, wy:wy + ry, wx:wx + rx] += gw
            del xs, ws, g, out
        done += len(starts)
        if progress is not None:
            progress(done)
        finish = bands[k + 1][0] if k + 1 < len(bands) else hi
        for a, b in _spans(lo, finish, step):
            g, xf = grad[a - lo:b - lo], x[a - lo:b - lo]
            if method == "saliency":
                result = g.abs()
            elif method == "input_x_gradient":
                result = xf * g
            else:
                result = (xf - baseline) * g
            start, stop, block = _crop(result, grid, a, b)
            if stop > start:
                yield start, stop, block
        _shift([x, weight, grad], finish - lo, hi - finish)
        lo = finish
    yield {"score": score, "windows_run": run}


def attribute_windows(loaded: Any, volume: Any, method: str, **kwargs: Any) -> dict[str, Any]:
    """Sliding-window attribution (see the module's docstring): :func:`attribute_windows_steps`
    run to its end."""
    return run_steps(attribute_windows_steps(loaded, volume, method, **kwargs))


def attribute_windows_steps(
    loaded: Any,
    volume: Any,
    method: str,
    *,
    prep: Any,
    spacing: tuple[float, float, float],
    region: Any = None,
    target: int | None = None,
    roi_size: Any = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sw_batch_size: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    slab: int | None = None,
    workdir: str | Path | None = None,
    params: dict[str, Any] | None = None,
) -> Steps[dict[str, Any]]:
    """Sliding-window attribution (see the module's docstring); the work behind
    :func:`~napari_xaimed.attribution.lazy.attribute_lazy` for models without
    ``input_size``, as steps: one per plane band finished (the default region's forward pass,
    then the attribution), so a widget shows progress and can cancel between bands.

    The default region's store is removed when the run ends, and so is everything else in the
    temporary folder (``xaimed-windows-*`` under ``workdir``), except, without ``out``, the
    map's own store, which the returned dask array reads: it stays until Python exits (or
    until the caller deletes ``temporary``).

    Returns
    -------
    dict
        ``map`` (dask), ``channel``, ``score``, ``device``, ``params`` (what was used), ``out``
        (the map's store) and ``temporary`` (the folder holding it without ``out``, else
        None).
    """
    from napari_xaimed.io.lazy import create_zarr, read_slab, read_zarr
    from napari_xaimed.models.device import auto_batch

    params = dict(params or {})
    shape = tuple(int(n) for n in volume.shape)
    if method not in WINDOW_METHODS:
        if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            why = ("its absolute value (or square) applies to each noisy copy's gradient of the "
                   "whole volume, which windows cannot add up without one accumulator per "
                   "sample")
        else:
            why = "it is not linear in the target, or it needs the whole network's pass"
        raise XaimedError(
            f"{method} is not available for sliding-window attribution of a volume larger "
            f"than memory ({why}): use one of {', '.join(WINDOW_METHODS)}, or explain a crop "
            "(volume[z0:z1]) in memory with attribute().")
    baseline = params.get("baseline", "zeros")
    if method == "integrated_gradients" and baseline == "blurred":
        raise XaimedError("the blurred baseline needs the whole volume blurred: use "
                          "baseline='zeros', 'min' or a number lazily, or explain a crop in "
                          "memory with attribute().")
    yield Progress(0, 1, "preparing the windows")
    setup = prepare_windows(loaded, volume, prep, roi_size=roi_size, overlap=overlap,
                            blend=blend, sw_batch_size=sw_batch_size, device=device,
                            slab=slab)
    net, grid, read_input, planes = setup.net, setup.grid, setup.read_input, setup.planes
    channels, dev, roi, sw, scale = (setup.channels, setup.device, setup.roi, setup.sw,
                                     setup.scale)
    base_dir = None
    if region is None or out is None:
        base_dir = make_folder("xaimed-windows-", workdir)
    keep_map = out is None  # the returned map reads its store in base_dir
    try:
        channel = 1 if target is None and channels > 1 else int(target or 0)
        if not 0 <= channel < channels:
            raise XaimedError(f"target channel {channel} does not exist: the model has {channels} "
                              "output channels.")
        z_chunk = min(shape[0], max(planes, 1))
        chunks = (z_chunk, min(shape[1], 512), min(shape[2], 512))
        if out is None:
            out = base_dir / "map.zarr"  # type: ignore[operator]
        # created first: an existing store is refused before any window runs
        store = create_zarr(out, shape, np.float32, spacing, chunks=chunks, overwrite=overwrite,
                            metadata={"kind": "attribution", "method": method})
        region_info: dict[str, Any] = {}
        depth = shape[0]
        passes, done = (2 if region is None else 1) * depth, 0  # planes, over both passes
        if region is None:
            mask_path = base_dir / "region.zarr"  # type: ignore[operator]
            mask_store = create_zarr(mask_path, shape, np.uint8, spacing, chunks=chunks)
            count = 0
            for start, stop, logits in forward_bands(net, grid, read_input, sw):
                mask = predicted_mask(logits, channel)
                count += int(mask.sum())
                mask_store[start:stop] = mask.cpu().numpy().astype(np.uint8)
                done = stop
                yield Progress(done, passes, f"model prediction: planes {start}-{stop - 1} "
                               f"of {depth}")
            if count == 0:
                raise XaimedError(f"the model predicts no voxel of channel {channel} on this "
                                  "volume: give a region (a mask of the volume's shape) to "
                                  "explain.")
            region = mask_store
            region_info = {"region": "model prediction", "region_voxels": count}
        else:
            if tuple(int(n) for n in np.shape(region)) != shape:
                raise XaimedError(f"the region {tuple(np.shape(region))} must have the volume's "
                                  f"shape {shape}.")
            count = 0
            for start in range(0, shape[0], planes):
                count += int(np.count_nonzero(read_slab(region, start, min(start + planes,
                                                                            shape[0]))))
            if count == 0:
                raise XaimedError("the region is empty: draw or pick a non-empty mask.")
            region_info = {"region": "given mask", "region_voxels": count}
        read_region = PaddedReader(region, grid, planes,
                                   lambda block: (block != 0).astype(np.float32), torch.float32,
                                   dev)
        if baseline == "min":
            from napari_xaimed.io.slab_stats import value_range

            lo = float(value_range(volume, planes)[0])
            base_value = float(scale(np.asarray([lo], np.float32))[0])
        elif isinstance(baseline, int | float):
            base_value = float(baseline)
        else:
            base_value = 0.0
        steps = int(params.get("steps", 32))
        # IG: interpolation points per pass, over all windows of a batch
        step_batch = int(batch_size) if batch_size else max(1, auto_batch(
            math.prod(roi) * sw, dev, limit=steps))
        finite, nonzero = True, False
        score, windows_run = 0.0, 0
        for item in gradient_bands(net, grid, read_input, read_region, channel, method,
                                   baseline=base_value, steps=steps,
                                   step_batch=step_batch,
                                   sw_batch_size=sw):
            if isinstance(item, dict):
                score, windows_run = item["score"], item["windows_run"]
                continue
            start, stop, block = item
            finite = finite and bool(torch.isfinite(block).all())
            nonzero = nonzero or bool(block.any())
            store[start:stop] = block.cpu().numpy()
            yield Progress(min(done + stop, passes), passes,
                           f"{method}: planes {start}-{stop - 1} of {depth}")
        if not finite:
            raise XaimedError(f"{method} gave NaN or infinite values on this model: its scores or "
                              "gradients overflow here. Try another baseline or method.")
        if not nonzero:
            raise XaimedError(f"{method} gave a map of zeros on this volume: the target's gradient "
                              "is zero everywhere. Pick another target or region.")
        used = {"roi_size": list(roi), "overlap": float(overlap), "blend": blend,
                "sw_batch_size": sw, "windows": len(grid.starts), "windows_run": windows_run,
                "bands": len(grid.bands()), "sigma_scale": SIGMA_SCALE,
                "padded_shape": list(grid.padded), "slab": planes, "channel": channel,
                "output_channels": channels, **region_info}
        result = {"map": read_zarr(out).data, "channel": channel, "score": score,
                  "device": str(dev), "params": used, "out": str(out),
                  "temporary": str(base_dir) if keep_map else None}
    except BaseException:  # a failed or cancelled run leaves no temporary stores behind
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)
        raise
    if base_dir is not None:
        # the default region served this run only; the map stays while it may be read
        shutil.rmtree(base_dir / "region.zarr", ignore_errors=True)
        if keep_map:
            remove_at_exit(base_dir)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
    return result
