import pytest
import torch


class TinyNet(torch.nn.Module):
    """A small 3D classifier with every layer type the methods care about."""

    def __init__(self, in_channels: int = 1, classes: int = 3):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(in_channels, 4, 3, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool3d(2)
        self.conv2 = torch.nn.Conv3d(4, 6, 3, padding=1)
        self.relu2 = torch.nn.ReLU()
        self.gpool = torch.nn.AdaptiveAvgPool3d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(6, classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        return self.fc(self.flatten(self.gpool(self.relu2(self.conv2(x)))))


@pytest.fixture
def tiny_net():
    """The TinyNet class, for tests that build their own."""
    return TinyNet


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def volume():
    g = torch.Generator().manual_seed(1)
    return torch.rand((12, 14, 16), generator=g).numpy()
