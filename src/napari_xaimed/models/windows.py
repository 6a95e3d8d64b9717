"""MONAI's sliding windows over a volume larger than memory, band by band along z: the window
grid and importance maps (:func:`window_grid`), the padded, scaled reader of each band's input
planes (:class:`PaddedReader`), the forward pass band by band (:func:`forward_bands`) and the
set-up both the lazy segmentation and the lazy attribution use (:func:`prepare_windows`).
The attribution over these windows is :mod:`napari_xaimed.attribution.windows`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError

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


