"""The bundled model: a small 3D CNN that tells lesion volumes from lesion-free ones.

It is trained on :func:`napari_xaimed.samples.lesion_volume` data by
``scripts/train_lesion_classifier.py`` (seeded, well under a minute on two CPU cores), and its
weights ship in ``models/weights`` with a JSON config in the format
:func:`~napari_xaimed.attribution.load_model` reads for any state dict: the network
(``"LesionNet"``, a network the package registers; a MONAI network name works the same),
its arguments and the preprocessing.

Three convolutions, two max-poolings, then a global max-pool and one linear layer: the last
convolution keeps a 8^3 map of the 32^3 input, and the global pooling lets Grad-CAM point at
where the evidence is (a flatten + linear head would mix positions into every class weight).
"""

from __future__ import annotations

from typing import Any

import torch

from napari_xaimed.models.bundled import CLASSIFIER_WEIGHTS

WEIGHTS = CLASSIFIER_WEIGHTS
INPUT_SIZE = (32, 32, 32)
# 64 mm field of view at 2 mm: the lesion sample's default 64^3 at 1 mm, resized by half
SPACING = (2.0, 2.0, 2.0)
CONFIG: dict[str, Any] = {
    "network": "LesionNet",
    "args": {"channels": [8, 16, 32], "classes": 2},
    "preprocessing": {"scaling": "zscore", "input_size": list(INPUT_SIZE)},
    "classes": ["no lesion", "lesion"],
}


class LesionNet(torch.nn.Module):
    """conv-ReLU-maxpool x2, conv-ReLU, global max-pool, linear."""

    def __init__(self, channels: tuple[int, int, int] | list[int] = (8, 16, 32),
                 classes: int = 2, in_channels: int = 1):
        super().__init__()
        c1, c2, c3 = channels
        self.features = torch.nn.Sequential(
            torch.nn.Conv3d(in_channels, c1, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool3d(2),
            torch.nn.Conv3d(c1, c2, 3, padding=1), torch.nn.ReLU(),
            torch.nn.MaxPool3d(2),
            torch.nn.Conv3d(c2, c3, 3, padding=1), torch.nn.ReLU(),
        )
        self.pool = torch.nn.AdaptiveMaxPool3d(1)
        self.flatten = torch.nn.Flatten()
        self.head = torch.nn.Linear(c3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


