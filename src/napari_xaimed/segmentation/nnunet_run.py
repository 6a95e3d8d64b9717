"""Segmentation with an nnU-Net v2 result folder, through nnU-Net's own predictor.

:func:`~napari_xaimed.segmentation.deep.model_segmentation_steps` hands a loaded
:class:`~napari_xaimed.models.nnunet.NnUNetModel` here: nnU-Net's preprocessing, sliding
windows, mirroring and fold ensembling decide the labels (identical to ``nnUNetPredictor``'s),
so the settings of our own sliding-window inference do not apply and are refused when changed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from napari_xaimed._core.errors import XaimedError
from napari_xaimed._core.progress import Progress, Steps
from napari_xaimed.models.nnunet import NnUNetModel, nnunet_segmentation_steps

# settings of the MONAI path that nnU-Net decides itself, with their defaults
NOT_FOR_NNUNET = {"roi_size": None, "overlap": 0.25, "blend": "gaussian",
                  "sw_batch_size": None, "autocast": None, "output": "softmax",
                  "threshold": 0.5, "preprocessing": None, "model_spacing": None}


def nnunet_model_steps(volume: np.ndarray, loaded: NnUNetModel, spacing: tuple[float, ...], *,
                       channel: int | None, largest_component: bool, started: float,
                       **others: Any) -> Steps[Any]:
    """The :class:`~napari_xaimed.segmentation.result.ModelSegmentation` of an nnU-Net model."""
    from napari_xaimed.segmentation.result import ModelSegmentation, keep_largest

    changed = sorted(k for k, v in others.items() if NOT_FOR_NNUNET.get(k, v) != v)
    if changed:
        raise XaimedError(
            f"an nnU-Net model segments with nnU-Net's own settings (its plans' patch size and "
            f"spacing, tile step 0.5, Gaussian weighting, mirroring, its normalisation), so "
            f"{', '.join(changed)} cannot be set; leave {'it' if len(changed) == 1 else 'them'} "
            "out.")
    labels, probability, facts = yield from nnunet_segmentation_steps(volume, loaded, spacing)
    n_classes = len(loaded.classes)
    if channel is not None:
        if not 0 <= channel < max(n_classes, 1):
            raise XaimedError(f"channel {channel} does not exist: the model has classes "
                              f"0..{n_classes - 1} ({', '.join(loaded.classes)}).")
        labels = (labels == channel).astype(np.uint8)
    if largest_component:
        import torch

        labels = keep_largest(torch.from_numpy(labels)).numpy().astype(labels.dtype)
    params = {"nnunet": {"folder": loaded.folder, "folds": loaded.folds,
                         "checkpoint": loaded.checkpoint, "tile_step_size": 0.5,
                         "gaussian": True,
                         "mirroring_axes": loaded.predictor.allowed_mirroring_axes,
                         "target_spacing": facts["target_spacing"],
                         "preprocessed_shape": facts["preprocessed_shape"]},
              "channel": channel, "largest_component": bool(largest_component),
              "spacing": list(spacing)}
    yield Progress(1, 1, "done")
    return ModelSegmentation(labels, probability.astype(np.float32, copy=False),
                             list(loaded.classes), params, int(facts["windows"]),
                             time.perf_counter() - started, str(loaded.predictor.device),
                             loaded.provenance())
