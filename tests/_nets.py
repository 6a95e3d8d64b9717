"""Small networks shared by several test modules."""

from __future__ import annotations

import torch


class DropNet(torch.nn.Module):
    """A 3D classifier of ``classes`` outputs with dropout: kept on, every forward pass draws
    new masks from torch's global generator, which no local generator can replace."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 8, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.head = torch.nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.conv(x))).mean(dim=(2, 3, 4)))
