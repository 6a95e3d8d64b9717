"""The bundled segmentation network: a small MONAI UNet that outlines the lesion sample's lesions.

It is trained on :func:`napari_xaimed.samples.lesion_volume` data by
``scripts/train_lesion_segmenter.py`` (seeded, under a minute on two CPU cores), and its weights
ship in ``models/weights`` with a JSON config in the format
:func:`~napari_xaimed.attribution.load_model` reads for any state dict (a MONAI network name,
its arguments, the preprocessing and the class names), so ``load_model("bundled-segmenter")``
gives the same model to the segmentation and the attribution capabilities.

The network is ``monai.networks.nets.UNet`` with channels (8, 16, 32), two stride-2 levels and no
normalisation layer: without instance norm a window's output does not depend on what else the
window holds, so sliding-window results match whole-volume ones up to the border context, and
any window size divisible by 4 fits.
"""

from __future__ import annotations

from typing import Any

import torch

from napari_xaimed.models.bundled import SEGMENTER_WEIGHTS

WEIGHTS = SEGMENTER_WEIGHTS
# the lesion sample's default geometry, which the network is trained on
SPACING = (1.0, 1.0, 1.0)
SHAPE = (64, 64, 64)
PATCH = (32, 32, 32)
CONFIG: dict[str, Any] = {
    "network": "UNet",
    "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
             "strides": [2, 2], "num_res_units": 0, "norm": None},
    "preprocessing": {"scaling": "zscore"},
    "classes": ["background", "lesion"],
    "spacing": list(SPACING),
}


def build() -> torch.nn.Module:
    """The untrained network of :data:`CONFIG`."""
    from napari_xaimed.models.loading import build_network

    return build_network(CONFIG["network"], dict(CONFIG["args"]))


