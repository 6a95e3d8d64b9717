"""Sliding windows' parameters and predictor, shared by segmentation (MONAI's
``sliding_window_inference``) and the lazy bands of :mod:`napari_xaimed.models.windows`: the
window size and count, the parameter checks, and the predictor that runs the model on a window
batch without gradients (under autocast when asked) and checks the first output."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.models.device import is_out_of_memory
from napari_xaimed.models.preprocess import Preprocessing

AUTOCAST = {None: None, "bf16": torch.bfloat16, "fp16": torch.float16}


class _WindowRunner:
    """The predictor handed to MONAI: runs the model on a window batch without gradients
    (under autocast when asked) and checks the first output."""

    def __init__(self, module: torch.nn.Module, device: torch.device, autocast: str | None,
                 output: str, channel: int | None):
        self.module, self.device, self.dtype = module, device, AUTOCAST[autocast]
        self.output, self.channel = output, channel
        self.checked = False

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # grad mode and autocast are per thread: set them around the model call only, so they
        # never leak into the generator's caller between switches
        with torch.no_grad():
            if self.dtype is None:
                return self.module(x)
            with torch.autocast(self.device.type, dtype=self.dtype):
                return self.module(x).float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.checked:
            return self._forward(x)
        try:
            out = self._forward(x)
        except Exception as exc:  # noqa: BLE001 - the first window tells if the model fits
            if is_out_of_memory(exc):
                raise
            raise XaimedError(
                f"the model does not accept a window of shape {tuple(x.shape)} (batch, "
                f"channel, z, y, x): {type(exc).__name__}: {str(exc).splitlines()[0]}. "
                "Check that it takes one input channel and that roi_size fits it (a "
                "network that halves the size k times needs sizes divisible by 2^k, e.g. "
                "64 or 96).") from exc
        self._check(x, out)
        self.checked = True
        return out

    def _check(self, x: torch.Tensor, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise XaimedError(
                f"the model returns a {type(out).__name__}, not a tensor: segmentation needs "
                "one (batch, channels, z, y, x) tensor of logits; wrap the model so that its "
                "forward returns that tensor.")
        if out.ndim == 2:
            raise XaimedError(
                f"the model outputs class scores {tuple(out.shape)} (batch, classes), not a "
                "segmentation map: use a segmentation network, whose output is (batch, "
                "channels, z, y, x); a classifier can be explained in the attribution widget.")
        if out.ndim != 5 or out.shape[0] != x.shape[0] or out.shape[2:] != x.shape[2:]:
            raise XaimedError(
                f"the model's output {tuple(out.shape)} does not fit its input window "
                f"{tuple(x.shape)}: sliding-window inference needs (batch, channels) and the "
                "window's own z, y, x size; a network that changes the size needs a "
                "roi_size it maps onto itself (e.g. divisible by 16).")
        channels = int(out.shape[1])
        if self.output == "softmax" and channels < 2:
            raise XaimedError(
                "the model has one output channel, and a softmax over one channel is always "
                "1: use output='sigmoid' (with a threshold) for a single-channel model.")
        if self.channel is not None and not 0 <= self.channel < channels:
            raise XaimedError(f"channel {self.channel} does not exist: the model has "
                              f"{channels} output channels (0..{channels - 1}).")


BLENDS = ("gaussian", "constant")


OUTPUTS = ("softmax", "sigmoid")


# default window edge: MONAI's usual 96, or the volume's size rounded up to a multiple of 16
# (networks with four stride-2 levels need that) when the volume is smaller
DEFAULT_ROI = 96


ROI_MULTIPLE = 16


def _three_sizes(value: Any, name: str) -> tuple[int, int, int]:
    sizes = (value,) * 3 if isinstance(value, (int, np.integer)) else tuple(value)
    if len(sizes) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in sizes):
        raise XaimedError(f"{name} must be one positive integer or three (z, y, x), got "
                          f"{value!r}.")
    return tuple(int(s) for s in sizes)  # type: ignore[return-value]


def default_roi_size(shape: Sequence[int], prep: Preprocessing | None = None
                     ) -> tuple[int, int, int]:
    """The window when none is given: the model's ``input_size`` when its preprocessing names
    one, else per axis 96, or the axis rounded up to a multiple of 16 when it is smaller."""
    if prep is not None and prep.input_size is not None:
        return tuple(prep.input_size)  # type: ignore[return-value]
    return tuple(min(DEFAULT_ROI, -(-int(n) // ROI_MULTIPLE) * ROI_MULTIPLE)
                 for n in shape)  # type: ignore[return-value]


def window_count(shape: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    """Windows ``sliding_window_inference`` runs on a volume of ``shape`` (after its padding
    of axes smaller than the window), by MONAI's own scan rule."""
    count = 1
    for n, r in zip(shape, roi_size, strict=True):
        n = max(int(n), int(r))
        step = r if r == n else max(1, int(r * (1 - overlap)))
        count *= math.ceil((n - r) / step) + 1
    return count


def _in_channels(module: torch.nn.Module) -> int | None:
    """Input channels of the first convolution, when the module exposes one."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.modules.conv._ConvNd):
            return int(sub.in_channels)
    return None


def _check_params(overlap: float, blend: str, output: str, threshold: float,
                  channel: int | None, autocast: str | None, sw_batch_size: int | None) -> None:
    if not 0 <= float(overlap) < 1:
        raise XaimedError(f"overlap must be at least 0 and below 1, got {overlap!r}.")
    if blend not in BLENDS:
        raise XaimedError(f"blend must be one of {BLENDS}, got {blend!r}.")
    if output not in OUTPUTS:
        raise XaimedError(f"output must be one of {OUTPUTS}, got {output!r}.")
    if not 0 < float(threshold) < 1:
        raise XaimedError(f"threshold must be between 0 and 1, got {threshold!r}.")
    if channel is not None and (not isinstance(channel, (int, np.integer)) or channel < 0):
        raise XaimedError(f"channel must be None or an output channel index (0, 1, ...), got "
                          f"{channel!r}.")
    if autocast not in AUTOCAST:
        raise XaimedError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}.")
    if sw_batch_size is not None and (not isinstance(sw_batch_size, (int, np.integer))
                                      or sw_batch_size < 1):
        raise XaimedError(f"sw_batch_size must be a positive integer, got {sw_batch_size!r}.")
