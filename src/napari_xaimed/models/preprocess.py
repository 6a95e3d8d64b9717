"""From a volume to the model's input tensor and from an attribution back to the volume's grid.

The settings live in :class:`Preprocessing` so they travel with the model (its config file) and
into each result's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.io.lazy import read_slab, z_slabs

SCALINGS = ("none", "zscore", "minmax", "window")


@dataclass(frozen=True)
class Preprocessing:
    """Intensity scaling and the input size a model needs.

    Attributes
    ----------
    scaling : {"none", "zscore", "minmax", "window"}
        ``zscore``: (x - mean) / std over the volume; ``minmax``: to [0, 1]; ``window``: clip to
        ``window`` (e.g. a CT window in HU) and map it to [0, 1].
    window : (float, float) or None
        Lower and upper bound for ``scaling="window"``.
    input_size : (int, int, int) or None
        Resize (trilinear) to this ``(z, y, x)`` size before the model; attributions are
        resized back to the volume's own grid. None: the volume goes in at its own size.
    """

    scaling: str = "none"
    window: tuple[float, float] | None = None
    input_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise XaimedError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}.")
        if self.scaling == "window":
            if self.window is None or len(self.window) != 2 or not self.window[0] < self.window[1]:
                raise XaimedError("scaling='window' needs window=(low, high) with low < high, "
                                  "e.g. (-160, 240) for a CT soft-tissue window.")
        if self.input_size is not None and (len(self.input_size) != 3
                                            or min(self.input_size) < 1):
            raise XaimedError(f"input_size must be three positive sizes (z, y, x), got "
                              f"{self.input_size!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Preprocessing:
        data = dict(data or {})
        unknown = set(data) - {"scaling", "window", "input_size"}
        if unknown:
            raise XaimedError(f"unknown preprocessing settings {sorted(unknown)}: use scaling, "
                              "window and input_size.")
        for key in ("window", "input_size"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def overridden(self, override: Preprocessing | dict[str, Any] | None) -> Preprocessing:
        """These settings with a call's ``preprocessing``: a whole :class:`Preprocessing`
        replaces them, a dict changes the settings it names, None keeps them."""
        if override is None:
            return self
        if isinstance(override, Preprocessing):
            return override
        return Preprocessing.from_dict({**self.to_dict(), **override})


def scale_intensity(volume: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """The volume's intensities as ``prep`` says (float32)."""
    x = np.asarray(volume, dtype=np.float32)
    if prep.scaling == "zscore":
        std = float(x.std())
        return (x - float(x.mean())) / (std if std > 0 else 1.0)
    if prep.scaling == "minmax":
        lo, hi = float(x.min()), float(x.max())
        return (x - lo) / (hi - lo if hi > lo else 1.0)
    if prep.scaling == "window":
        lo, hi = prep.window  # type: ignore[misc]
        return (np.clip(x, lo, hi) - lo) / (hi - lo)
    return x


def to_input(volume: np.ndarray, prep: Preprocessing, device: torch.device) -> torch.Tensor:
    """``(1, 1, z, y, x)`` float tensor on ``device``: scaled, then resized when needed."""
    tensor = torch.from_numpy(np.ascontiguousarray(scale_intensity(volume, prep)))
    tensor = tensor[None, None].to(device)
    if prep.input_size is not None and tuple(tensor.shape[2:]) != tuple(prep.input_size):
        tensor = F.interpolate(tensor, size=tuple(prep.input_size), mode="trilinear",
                               align_corners=False)
    return tensor


def to_volume_grid(attribution: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """An attribution ``(1, C, z, y, x)`` (channels summed) back on the volume's grid."""
    attr = attribution.detach().float()
    if attr.ndim == 5:
        attr = attr.sum(dim=1, keepdim=True)
    elif attr.ndim == 3:
        attr = attr[None, None]
    if tuple(attr.shape[2:]) != tuple(shape):
        attr = F.interpolate(attr, size=tuple(shape), mode="trilinear", align_corners=False)
    return attr[0, 0].cpu().numpy().astype(np.float32)


def _scaling_stats(volume: Any, prep: Preprocessing, planes: int) -> tuple[float, float]:
    """``(offset, divisor)`` of the scaling: ``(x - offset) / divisor`` (after the window's
    clip), from slab-by-slab passes; ``(0, 1)`` for no scaling."""
    depth = int(volume.shape[0])
    if prep.scaling == "zscore":
        total, count = 0.0, 0
        for start, stop in z_slabs(depth, planes):
            block = read_slab(volume, start, stop).astype(np.float32, copy=False)
            total += float(block.sum(dtype=np.float64))
            count += block.size
        mean = total / count
        squares = 0.0
        for start, stop in z_slabs(depth, planes):
            block = read_slab(volume, start, stop).astype(np.float64)
            squares += float(((block - mean) ** 2).sum())
        std = float(np.sqrt(squares / count))
        return mean, std if std > 0 else 1.0
    if prep.scaling == "minmax":
        from napari_xaimed.io.slab_stats import value_range

        lo, hi = (float(v) for v in value_range(volume, planes))
        return lo, (hi - lo if hi > lo else 1.0)
    if prep.scaling == "window":
        lo, hi = prep.window  # type: ignore[misc]
        return float(lo), float(hi - lo)
    return 0.0, 1.0
