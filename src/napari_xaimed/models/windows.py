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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.tempstores import make_folder, remove_at_exit

#: Methods explained window by window (linear in the target).
WINDOW_METHODS = ("saliency", "input_x_gradient", "integrated_gradients")
SIGMA_SCALE = 0.125


@dataclass
class WindowGrid:
    """MONAI's sliding windows over a volume.

    Attributes
    ----------
    shape : tuple of int
        The volume's shape.
    padded : tuple of int
        The shape after MONAI's padding of axes smaller than the window.
    before : tuple of int
        Padding before each axis (MONAI pads ``diff // 2`` before, the rest after).
    roi : tuple of int
    starts : list of tuple of int
        Window corners on the padded grid, in MONAI's order (z, then y, then x).
    importance : torch.Tensor
        The importance map, ``roi`` shaped, float32.
    """

    shape: tuple[int, int, int]
    padded: tuple[int, int, int]
    before: tuple[int, int, int]
    roi: tuple[int, int, int]
    starts: list[tuple[int, int, int]]
    importance: torch.Tensor

    def bands(self) -> list[tuple[int, list[tuple[int, int, int]]]]:
        """The windows grouped by z start, in order."""
        bands: dict[int, list[tuple[int, int, int]]] = {}
        for start in self.starts:
            bands.setdefault(start[0], []).append(start)
        return sorted(bands.items())

    def normaliser(self, z0: int, z1: int) -> torch.Tensor:
        """``N`` on padded planes ``z0:z1``: the importance summed over every window (in
        MONAI's order, so the float sums are MONAI's)."""
        rz, ry, rx = self.roi
        total = torch.zeros((z1 - z0, self.padded[1], self.padded[2]), dtype=torch.float32,
                            device=self.importance.device)
        for sz, sy, sx in self.starts:
            a, b = max(sz, z0), min(sz + rz, z1)
            if a < b:
                total[a - z0:b - z0, sy:sy + ry, sx:sx + rx] += self.importance[a - sz:b - sz]
        return total

    def valid(self, start: tuple[int, int, int]) -> torch.Tensor:
        """Whether each voxel of the window at ``start`` lies in the volume (not padding)."""
        axes = []
        for s, r, b, n in zip(start, self.roi, self.before, self.shape, strict=True):
            index = torch.arange(s, s + r, device=self.importance.device)
            axes.append((index >= b) & (index < b + n))
        return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def window_grid(shape: Sequence[int], roi: Sequence[int], overlap: float, blend: str,
                device: torch.device | str = "cpu") -> WindowGrid:
    """The windows ``sliding_window_inference`` runs on a volume of ``shape``."""
    from monai.data.utils import compute_importance_map, dense_patch_slices

    shape = tuple(int(n) for n in shape)
    roi = tuple(int(r) for r in roi)
    padded = tuple(max(n, r) for n, r in zip(shape, roi, strict=True))
    before = tuple((p - n) // 2 for n, p in zip(shape, padded, strict=True))
    # MONAI's _get_scan_interval
    interval = tuple(r if r == p else max(1, int(r * (1 - overlap)))
                     for r, p in zip(roi, padded, strict=True))
    slices = dense_patch_slices(padded, roi, interval)
    starts = [tuple(int(s.start) for s in window) for window in slices]
    importance = compute_importance_map(roi, mode=blend, sigma_scale=SIGMA_SCALE,
                                        device=device, dtype=torch.float32)
    return WindowGrid(shape, padded, before, roi, starts, importance)  # type: ignore[arg-type]


class PaddedReader:
    """Padded planes of a lazy 3D array, read a slab at a time, optionally mapped."""

    def __init__(self, array: Any, grid: WindowGrid, slab: int,
                 transform: Callable[[np.ndarray], np.ndarray], dtype: torch.dtype,
                 device: torch.device):
        self.array, self.grid, self.slab = array, grid, max(1, int(slab))
        self.transform, self.dtype, self.device = transform, dtype, device

    def __call__(self, z0: int, z1: int) -> torch.Tensor:
        from napari_xaimed.io.lazy import read_slab

        g = self.grid
        block = torch.zeros((z1 - z0, g.padded[1], g.padded[2]), dtype=self.dtype,
                            device=self.device)
        lo, hi = max(z0 - g.before[0], 0), min(z1 - g.before[0], g.shape[0])
        by, bx = g.before[1], g.before[2]
        for start in range(lo, hi, self.slab):
            stop = min(start + self.slab, hi)
            part = torch.from_numpy(np.ascontiguousarray(
                self.transform(read_slab(self.array, start, stop))))
            at = start + g.before[0] - z0
            block[at:at + stop - start, by:by + g.shape[1], bx:bx + g.shape[2]] = part.to(
                self.device, self.dtype)
        return block


def _crop(block: torch.Tensor, grid: WindowGrid, z0: int, z1: int
          ) -> tuple[int, int, torch.Tensor]:
    """Padded planes ``z0:z1`` (last three axes) cropped to the volume: ``(start, stop,
    block)`` in the volume's z, or an empty range."""
    bz, by, bx = grid.before
    lo, hi = max(z0, bz), min(z1, bz + grid.shape[0])
    if lo >= hi:
        return 0, 0, block[..., :0, :, :]
    return (lo - bz, hi - bz,
            block[..., lo - z0:hi - z0, by:by + grid.shape[1], bx:bx + grid.shape[2]])


def _stack(buffer: torch.Tensor, lo: int, starts: Sequence[tuple[int, int, int]],
           roi: tuple[int, int, int]) -> torch.Tensor:
    rz, ry, rx = roi
    return torch.stack([buffer[..., sz - lo:sz - lo + rz, sy:sy + ry, sx:sx + rx]
                        for sz, sy, sx in starts])


def _spans(start: int, stop: int, step: int) -> Iterator[tuple[int, int]]:
    """``(a, b)`` ranges of at most ``step`` planes covering ``start:stop``."""
    for a in range(start, stop, step):
        yield a, min(a + step, stop)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def check_window_output(x: torch.Tensor, out: Any, channel: int | None,
                        output: str = "sigmoid") -> int:
    """The model's output channels, after deep.py's checks that its output fits a window
    (``output="softmax"`` also refuses a single channel)."""
    from napari_xaimed.models.sliding import _WindowRunner

    runner = _WindowRunner(torch.nn.Identity(), x.device, None, output, channel)
    runner._check(x, out)
    return int(out.shape[1])


def _shift(buffers: Sequence[torch.Tensor], by: int, keep: int) -> None:
    """Move rows ``by:by + keep`` of each buffer (along its plane axis, the third from the
    end) to the front, plane by plane (forward, so no source plane is overwritten before it
    is copied) and without allocating."""
    for buffer in buffers:
        for i in range(keep):
            buffer[..., i, :, :].copy_(buffer[..., by + i, :, :])


def forward_bands(
    net: torch.nn.Module,
    grid: WindowGrid,
    read_input: PaddedReader,
    sw_batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """The sliding-window model's blended logits, band by band.

    The input, the weighted sum of the window outputs and the normaliser are kept for one
    window's depth of planes (fixed buffers, filled a slab at a time); planes no later window
    touches are finished and yielded.

    Yields
    ------
    (int, int, torch.Tensor)
        Volume planes ``start:stop`` and their logits ``(channels, stop - start, y, x)``;
        together the planes cover the volume once, in order.
    """
    rz, ry, rx = grid.roi
    step = read_input.slab
    bands = grid.bands()
    planes = (rz, *grid.padded[1:])
    dev = grid.importance.device
    x = torch.zeros(planes, dtype=torch.float32, device=dev)
    norm = torch.zeros(planes, dtype=torch.float32, device=dev)
    acc: torch.Tensor | None = None
    lo = hi = bands[0][0]
    done = 0
    for k, (sz, starts) in enumerate(bands):
        fresh = (hi, sz + rz)
        for a, b in _spans(hi, sz + rz, step):
            x[a - lo:b - lo] = read_input(a, b)
            norm[a - lo:b - lo] = grid.normaliser(a, b)
        hi = sz + rz
        for batch in _batches(starts, sw_batch_size):
            with torch.no_grad():
                out = net(_stack(x, lo, batch, grid.roi)[:, None]).float()
            if acc is None:
                acc = torch.zeros((out.shape[1], *planes), dtype=torch.float32, device=dev)
                fresh = (lo, hi)
            if fresh[0] < fresh[1]:
                acc[:, fresh[0] - lo:fresh[1] - lo] = 0
                fresh = (0, 0)
            for (wz, wy, wx), o in zip(batch, out, strict=True):
                acc[:, wz - lo:wz - lo + rz, wy:wy + ry, wx:wx + rx] += o * grid.importance
            done += len(batch)
            if progress is not None:
                progress(done)
        finish = bands[k + 1][0] if k + 1 < len(bands) else hi
        for a, b in _spans(lo, finish, step):
            start, stop, block = _crop(acc[:, a - lo:b - lo] / norm[a - lo:b - lo], grid,  # type: ignore[index]
                                       a, b)
            if stop > start:
                yield start, stop, block
        _shift([x, norm, acc], finish - lo, hi - finish)  # type: ignore[list-item]
        lo = finish


def predicted_mask(logits: torch.Tensor, channel: int) -> torch.Tensor:
    """Where the model predicts ``channel``: ``attribute``'s rule (argmax over channels, or a
    positive logit for a single channel)."""
    if logits.shape[0] > 1:
        return logits.argmax(dim=0) == channel
    return logits[0] > 0


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


def _scaler(prep: Any, offset: float, divisor: float) -> Callable[[np.ndarray], np.ndarray]:
    def scale(block: np.ndarray) -> np.ndarray:
        block = block.astype(np.float32, copy=False)
        if prep.scaling == "window":
            block = np.clip(block, *prep.window)
        if prep.scaling == "none":
            return block
        return (block - np.float32(offset)) / np.float32(divisor)
    return scale


@dataclass
class WindowSetup:
    """A model ready to run on a lazy volume's windows (see :func:`prepare_windows`)."""

    net: torch.nn.Module
    grid: WindowGrid
    read_input: PaddedReader
    planes: int
    channels: int
    device: torch.device
    roi: tuple[int, int, int]
    sw: int
    scale: Callable[[np.ndarray], np.ndarray]


def prepare_windows(loaded: Any, volume: Any, prep: Any, *, roi_size: Any = None,
                    overlap: float = 0.25, blend: str = "gaussian",
                    sw_batch_size: int | None = None, device: str | torch.device = "auto",
                    slab: int | None = None, output: str = "sigmoid",
                    threshold: float = 0.5, channel: int | None = None) -> WindowSetup:
    """The model on its device, MONAI's windows, the scaled padded reader and the model's
    output channels (from a pass on the first window, checked as deep.py checks it)."""
    from napari_xaimed.io.lazy import chunks_of, slab_size
    from napari_xaimed.models.device import pick_device
    from napari_xaimed.models.preprocess import _scaling_stats
    from napari_xaimed.models.sliding import (
        _check_params,
        _in_channels,
        _three_sizes,
        default_roi_size,
    )

    shape = tuple(int(n) for n in volume.shape)
    _check_params(overlap, blend, output, threshold, channel, None, sw_batch_size)
    dev = pick_device(device)
    net = loaded.module.to(dev).eval()
    in_channels = _in_channels(net)
    if in_channels is not None and in_channels != 1:
        raise XaimedError(f"the model takes {in_channels} input channels, but a volume gives "
                          "one: use a model trained on single-channel volumes.")
    roi = (_three_sizes(roi_size, "roi_size") if roi_size is not None
           else default_roi_size(shape, prep))
    grid = window_grid(shape, roi, float(overlap), blend, dev)
    if slab is not None and int(slab) < 1:
        raise XaimedError(f"slab must be a positive number of planes, got {slab}.")
    planes = int(slab) if slab else slab_size(shape, np.dtype(volume.dtype).itemsize,
                                              chunks_of(volume), 32 * 2**20)
    offset, divisor = _scaling_stats(volume, prep, planes)
    scale = _scaler(prep, offset, divisor)
    read_input = PaddedReader(volume, grid, planes, scale, torch.float32, dev)
    sw = int(sw_batch_size) if sw_batch_size else 1
    s = grid.starts[0]
    first = read_input(s[0], s[0] + roi[0])[None, None, :, s[1]:s[1] + roi[1],
                                            s[2]:s[2] + roi[2]]
    try:
        with torch.no_grad():
            probe_out = net(first)
    except Exception as exc:  # noqa: BLE001 - the first window tells if the model fits
        raise XaimedError(
            f"the model does not accept a window of shape {tuple(first.shape)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}. Check that roi_size fits it "
            "(a network that halves the size k times needs sizes divisible by 2^k).") from exc
    channels = check_window_output(first, probe_out, channel, output)
    return WindowSetup(net, grid, read_input, planes, channels, dev, roi, sw, scale)


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

