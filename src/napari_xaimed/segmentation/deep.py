"""Segmentation with the user's model: MONAI sliding-window inference with progress and cancel.

The model is loaded as the attribution capability loads it
(:func:`napari_xaimed.attribution.load_model`: a module, TorchScript, a state dict with a JSON
config, a MONAI bundle, ``"bundled"`` or ``"bundled-segmenter"``), the volume is scaled as the
model's preprocessing says (and resampled to ``model_spacing`` when given), and
``monai.inferers.sliding_window_inference`` runs the windows.

MONAI's own ``progress`` flag only draws a tqdm bar, so the inference runs under
:func:`napari_xaimed._core.stepped.stepped` (the same greenlet hand-over the attribution
methods use): after a window batch the predictor switches back to the step generator, so the
progress is exact and closing the generator (a cancel) stops the inference right after the
batch it reported. Batches finished within :data:`REPORT_INTERVAL_S` of the last report run on
without a hand-over: progress bars need no more. The predictor (:class:`_WindowRunner`) keeps
grad mode and autocast confined to the model call and checks the first batch's output (a
segmentation map on the window's grid, enough channels), so a model that does not fit fails
with a clear message before the rest runs, at no extra pass. The generator must be resumed and
closed from the thread that started it (as napari's workers and scripts do).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps, run_steps
from napari_xaimed._core.stepped import stepped
from napari_xaimed._core.validate import as_spacing, as_volume
from napari_xaimed.models.device import halved_batch, is_out_of_memory, pick_device
from napari_xaimed.models.domain import warn_outside
from napari_xaimed.models.loading import LoadedModel, load_model
from napari_xaimed.models.preprocess import Preprocessing, scale_intensity
from napari_xaimed.models.sliding import (  # noqa: F401 - the window helpers: also here, as before
    AUTOCAST,
    BLENDS,
    DEFAULT_ROI,
    OUTPUTS,
    ROI_MULTIPLE,
    _check_params,
    _in_channels,
    _three_sizes,
    _WindowRunner,
    default_roi_size,
    window_count,
)
from napari_xaimed.segmentation.result import ModelSegmentation, keep_largest

REPORT_INTERVAL_S = 0.05
# the keyword arguments of segment_with_model after the volume, for a method registry or a CLI
MODEL_PARAMS = ("model", "spacing", "roi_size", "overlap", "blend", "sw_batch_size", "device",
                "autocast", "output", "threshold", "channel", "largest_component",
                "preprocessing", "model_spacing", "trust")


class _Cancelled(Exception):
    """Raised by the predictor in the helper thread once the step generator was closed."""


def sliding_window_steps(
    x: torch.Tensor,
    module: torch.nn.Module,
    *,
    roi_size: tuple[int, int, int],
    sw_batch_size: int,
    overlap: float = 0.25,
    blend: str = "gaussian",
    device: torch.device,
    autocast: str | None = None,
    output: str = "softmax",
    channel: int | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> Steps[tuple[torch.Tensor, int]]:
    """``sliding_window_inference`` of ``module`` on ``x`` (``(1, C, z, y, x)`` on ``device``)
    as a step generator: yields :class:`Progress` (windows done, plus ``progress_offset``)
    after the first window batch and then at most every :data:`REPORT_INTERVAL_S`; closing
    it at a yield stops the inference there (the batch that ran is the last); on
    out-of-memory it halves ``sw_batch_size`` and starts again.

    Returns
    -------
    (torch.Tensor, int)
        The stitched logits ``(1, channels, z, y, x)`` and the batch size that ran.
    """
    from monai.inferers import sliding_window_inference

    windows = window_count(x.shape[2:], roi_size, overlap)
    total = progress_total if progress_total is not None else windows
    runner = _WindowRunner(module, device, autocast, output, channel)

    def report(done: int) -> Progress:
        return Progress(progress_offset + done, total, f"window {done} of {windows}")

    while True:
        def inference(predictor: Any, batch: int = sw_batch_size) -> torch.Tensor:
            # no torch.no_grad() here: the runner sets it around each model call
            return sliding_window_inference(x, roi_size, batch, predictor, overlap=overlap,
                                            mode=blend)

        try:
            logits = yield from stepped(inference, runner, windows, "windows",
                                        interval_s=REPORT_INTERVAL_S, report=report)
            return logits, sw_batch_size
        except Exception as exc:  # noqa: BLE001 - out-of-memory is retried, the rest raised
            if not is_out_of_memory(exc):
                raise
            sw_batch_size = halved_batch(exc, sw_batch_size, device)


def _resize(tensor: torch.Tensor, size: tuple[int, ...], anti_aliasing: bool = False
            ) -> torch.Tensor:
    """``(1, C, z, y, x)`` resized (trilinear, MONAI ``Resize``) to ``size``."""
    from monai.transforms import Resize
    from monai.utils import convert_to_tensor

    if tuple(tensor.shape[2:]) == tuple(size):
        return tensor
    resized = Resize(size, mode="trilinear", anti_aliasing=anti_aliasing)(tensor[0])
    return convert_to_tensor(resized, track_meta=False)[None]


def _labels_and_probability(logits: torch.Tensor, shape: tuple[int, ...], output: str,
                            threshold: float, channel: int | None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and foreground probability on the volume's grid from stitched logits
    ``(1, C, z, y, x)`` (probabilities resampled to ``shape`` before the labels are taken)."""
    channels = int(logits.shape[1])
    resample = tuple(logits.shape[2:]) != tuple(shape)
    if output == "softmax" and channels == 2 and channel in (None, 1):
        # P(class 1) = 1 - P(class 0) = sigmoid(l1 - l0): one channel to compute and resample,
        # a tenth of the time of softmax and argmax over both on CPU
        probability = _resize(torch.sigmoid(logits[:, 1:] - logits[:, :1]), shape)[0, 0]
        labels = probability > 0.5 if resample else logits[0, 1] > logits[0, 0]
        return labels, probability
    probs = torch.softmax(logits, dim=1) if output == "softmax" else torch.sigmoid(logits)
    probs = _resize(probs, shape)[0]
    if output == "softmax":
        # max(dim) gives the first index on ties, like argmax, at a fraction of its time
        winner = probs.max(dim=0).indices
        if channel is None:
            return winner, 1.0 - probs[0]
        return winner == channel, probs[channel]
    if channel is None and channels == 1:
        channel = 0
    if channel is None:
        probability, best = probs.max(dim=0)
        return torch.where(probability > threshold, best + 1, 0), probability
    return probs[channel] > threshold, probs[channel]


def _auto_sw_batch(roi_size: tuple[int, ...], windows: int, device: torch.device) -> int:
    """Windows per pass: one on CPU (bigger batches do not pay off there, and one window per
    step keeps cancel quick), up to 8 on a GPU as its free memory allows."""
    if device.type == "cpu":
        return 1
    from napari_xaimed.models.device import auto_batch

    return max(1, min(windows, auto_batch(math.prod(roi_size), device, limit=8)))


def model_segmentation_steps(
    volume: np.ndarray,
    model: Any,
    *,
    spacing: Any = None,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.25,
    blend: str = "gaussian",
    sw_batch_size: int | None = None,
    device: str | torch.device = "auto",
    autocast: str | None = None,
    output: str = "softmax",
    threshold: float = 0.5,
    channel: int | None = None,
    largest_component: bool = False,
    preprocessing: dict[str, Any] | Preprocessing | None = None,
    model_spacing: Any = None,
    trust: bool | str = False,
) -> Steps[ModelSegmentation]:
    """Generator form of :func:`segment_with_model`: yields :class:`Progress` in windows
    (total: windows + 2; preprocessing, windows done after the first batch and then at most
    every :data:`REPORT_INTERVAL_S`, postprocessing) and returns a
    :class:`ModelSegmentation`. Closing it (a cancel) stops the inference at the window batch
    it last reported: no further window runs."""
    started = time.perf_counter()
    volume = as_volume(volume, "volume")
    spacing = as_spacing(spacing)
    _check_params(overlap, blend, output, threshold, channel, autocast, sw_batch_size)
    loaded: LoadedModel = load_model(model, device=device, trust=trust)
    from napari_xaimed.models.nnunet import NnUNetModel

    if isinstance(loaded, NnUNetModel):
        from napari_xaimed.segmentation.nnunet_run import nnunet_model_steps

        return (yield from nnunet_model_steps(
            volume, loaded, spacing, channel=channel, largest_component=largest_component,
            started=started, roi_size=roi_size, overlap=overlap, blend=blend,
            sw_batch_size=sw_batch_size, autocast=autocast, output=output,
            threshold=threshold, preprocessing=preprocessing, model_spacing=model_spacing))
    prep = loaded.preprocessing.overridden(preprocessing)
    dev = pick_device(device)
    module = loaded.module
    weight = next(module.parameters(), None)
    if weight is None or not (weight.device == dev or (dev.index is None
                                                       and weight.device.type == dev.type)):
        module = module.to(dev)  # walks every parameter: skipped when already there
    module = module.eval()
    in_channels = _in_channels(module)
    if in_channels is not None and in_channels != 1:
        raise XaimedError(
            f"the model takes {in_channels} input channels, but a volume gives one: segment "
            "with a model trained on single-channel volumes (in_channels=1).")

    shape = tuple(volume.shape)
    grid = shape
    if model_spacing is not None:
        model_spacing = as_spacing(model_spacing, "model_spacing")
        grid = tuple(max(1, round(n * s / m))
                     for n, s, m in zip(shape, spacing, model_spacing, strict=True))
    # far outside the training volumes: warned (a notification in the viewer) and recorded
    domain = warn_outside(loaded.training_inputs, volume, spacing, prep, repr(loaded.source),
                          model_spacing)
    roi = (_three_sizes(roi_size, "roi_size") if roi_size is not None
           else default_roi_size(grid, prep))
    windows = window_count(grid, roi, float(overlap))
    batch = (int(sw_batch_size) if sw_batch_size is not None
             else _auto_sw_batch(roi, windows, dev))
    total = windows + 2

    yield Progress(0, total, "preprocessing")
    x = torch.from_numpy(np.ascontiguousarray(scale_intensity(volume, prep)))[None, None]
    x = x.to(dev)
    if grid != shape:
        x = _resize(x, grid, anti_aliasing=any(g < n for g, n in zip(grid, shape, strict=True)))
    logits, batch = yield from sliding_window_steps(
        x, module, roi_size=roi, sw_batch_size=batch, overlap=float(overlap), blend=blend,
        device=dev, autocast=autocast, output=output, channel=channel, progress_total=total)
    del x

    yield Progress(windows + 1, total, "probabilities and labels")
    labels, probability = _labels_and_probability(logits.float(), shape, output, threshold,
                                                  channel)
    n_channels = int(logits.shape[1])
    del logits
    labels = labels.to(torch.uint8 if n_channels < 256 else torch.int32)
    if largest_component:
        labels = keep_largest(labels)
    labels_np = labels.cpu().numpy().astype(np.uint8 if n_channels < 256 else np.uint16,
                                            copy=False)
    probability_np = probability.float().cpu().numpy().astype(np.float32, copy=False)
    params = {"roi_size": list(roi), "overlap": float(overlap), "blend": blend,
              "sw_batch_size": batch, "autocast": autocast, "output": output,
              "threshold": float(threshold), "channel": channel,
              "largest_component": bool(largest_component), "preprocessing": prep.to_dict(),
              "spacing": list(spacing),
              "model_spacing": None if model_spacing is None else list(model_spacing),
              "model_grid": list(grid), "output_channels": n_channels,
              **({"out_of_distribution": domain} if domain else {})}
    yield Progress(total, total, "done")
    return ModelSegmentation(labels_np, probability_np, list(loaded.classes), params, windows,
                             time.perf_counter() - started, str(dev), loaded.provenance())


def segment_with_model(volume: np.ndarray, model: Any, **params: Any) -> ModelSegmentation:
    """Segment a 3D volume with a PyTorch/MONAI model by sliding-window inference.

    Parameters
    ----------
    volume : numpy.ndarray
        3D image, ``(z, y, x)``, one channel.
    model : torch.nn.Module, str or pathlib.Path
        Anything :func:`napari_xaimed.attribution.load_model` reads: a module, a TorchScript
        file, a state dict with a JSON config beside it, a MONAI bundle folder, or
        ``"bundled-segmenter"`` (the lesion segmentation network that ships with the package).
    spacing : tuple of float, optional
        The volume's voxel size in mm, ``(z, y, x)`` (default 1 mm); used with ``model_spacing``.
    roi_size : int or (int, int, int), optional
        Sliding-window size on the model's grid. Default: the model's ``input_size`` when its
        preprocessing names one, else 96 per axis (smaller axes rounded up to a multiple of 16).
    overlap : float
        Overlap of neighbouring windows, in [0, 1).
    blend : {"gaussian", "constant"}
        How overlapping window outputs are weighted.
    sw_batch_size : int, optional
        Windows per forward pass. Default: 1 on CPU, up to 8 on a GPU as memory allows; on
        GPU out-of-memory it is halved and the inference starts again.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...
    autocast : {None, "bf16", "fp16"}
        Mixed precision for the forward passes.
    output : {"softmax", "sigmoid"}
        ``softmax``: labels are the argmax class, the probability 1 - P(channel 0). ``sigmoid``:
        independent channels; labels are ``1 + `` the most probable channel where its
        probability passes ``threshold``.
    threshold : float
        For ``output="sigmoid"``.
    channel : int, optional
        One output channel as the foreground: labels become 0/1 and the probability that
        channel's.
    largest_component : bool
        Keep only the largest connected component (26-connectivity) of each label.
    preprocessing : dict or Preprocessing, optional
        Overrides of the model's intensity scaling (``scaling``, ``window``).
    model_spacing : tuple of float, optional
        The voxel size the model was trained at: the volume is resampled to it (trilinear)
        before the windows, and the probabilities back to the volume's grid before the labels
        are taken, so the outputs keep the volume's shape.
    trust : bool or str
        Run code the model file's config names (see
        :func:`napari_xaimed.attribution.load_model`); without it such a file is refused.

    Returns
    -------
    ModelSegmentation
        ``labels`` and ``probability`` with the volume's shape, and their provenance.

    Examples
    --------
    >>> from napari_xaimed.samples import lesion_volume
    >>> s = lesion_volume(seed=3)
    >>> result = segment_with_model(s.image, "bundled-segmenter", spacing=s.spacing)
    >>> result.labels.shape == s.image.shape
    True
    """
    return run_steps(model_segmentation_steps(volume, model, **params))
