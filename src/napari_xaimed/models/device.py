"""Device choice, batch size from free memory, and out-of-memory handling."""

from __future__ import annotations

import os

import torch

from napari_xaimed._core.errors import XaimedError


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA, then MPS, then CPU; otherwise the named device, checked."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise XaimedError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'.") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise XaimedError("device 'cuda' was asked for but no CUDA GPU is available: use "
                          "device='auto' or 'cpu'.")
    return chosen


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_bytes(device: torch.device) -> int:
    """Memory a batch may use: a quarter of the GPU's free memory, or of the available RAM
    (at most 2 GiB on CPU, where bigger batches stop paying off)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 4 << 30
    return int(min(available // 4, 2 << 30))


#: Most input voxels per pass on the CPU (16 volumes of 32^3). Cancel acts between passes, and
#: a pass of 64 such volumes with gradients took about a second on two cores; bigger passes
#: gain nothing there.
CPU_VOXELS_PER_PASS = 16 * 32**3


def auto_batch(numel: int, device: torch.device, per_voxel_bytes: int = 256,
               limit: int = 64) -> int:
    """Volumes per forward pass that fit ``free_bytes``, assuming ``per_voxel_bytes`` of
    activations per input voxel (a small 3D CNN keeps well under this); on the CPU also at most
    :data:`CPU_VOXELS_PER_PASS` voxels, so a cancel waits a fraction of a second."""
    if device.type == "cpu":
        limit = min(limit, CPU_VOXELS_PER_PASS // max(1, numel))
    return int(max(1, min(limit, free_bytes(device) // max(1, numel * per_voxel_bytes))))


def out_of_memory_error(device: torch.device) -> XaimedError:
    # on the CPU already, "use device='cpu'" would be no advice at all
    fixes = ("a smaller input_size, or close other programs using memory" if device.type == "cpu"
             else "use device='cpu', a smaller input_size, or close other programs using the GPU")
    return XaimedError(f"out of memory on {device} even with one volume per pass: {fixes}.")


def forward_error(exc: BaseException, x: torch.Tensor) -> XaimedError:
    """The clear error for a model's first forward pass on ``x`` failing with ``exc``: out of
    memory says so; anything else means the input does not fit the model."""
    if is_out_of_memory(exc):
        return out_of_memory_error(x.device)
    return XaimedError(
        f"the model does not accept an input of shape {tuple(x.shape)} (batch, channel, "
        f"z, y, x): {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}. Check its "
        "channels and, if it needs a fixed size, set input_size in the preprocessing."
    )


def halved_batch(exc: BaseException, batch_size: int, device: torch.device) -> int:
    """The batch to retry with after ``exc``: half of ``batch_size`` when it was an
    out-of-memory error (re-raised otherwise; at one volume per pass, a clear error)."""
    if not is_out_of_memory(exc):
        raise exc
    if batch_size == 1:
        raise out_of_memory_error(device) from exc
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return max(1, batch_size // 2)
