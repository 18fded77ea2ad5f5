"""cnnnative.models: the model zoo, built from cnnnative.nn modules with torchvision's names."""
from __future__ import annotations

from . import nn

__all__ = ["lenet5", "LeNet5", "get_model", "MODELS"]


class LeNet5(nn.Module):
    """LeNet-5 for 1x28x28 inputs: conv5x5(6, pad 2)-pool-conv5x5(16)-pool-fc120-fc84-fc10 (ReLU, max pool)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        if x.dim() != 4 or tuple(x.shape[2:]) != (28, 28):
            raise ValueError(f"lenet5: expected input [N, C, 28, 28], got {list(x.shape)}")
        x = self.pool1(self.relu(self.conv1(x)))
        x = self.pool2(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


def lenet5(num_classes: int = 10, in_channels: int = 1, seed: int | None = None) -> LeNet5:
    if seed is not None:
        nn.manual_seed(seed)
    return LeNet5(num_classes, in_channels)


MODELS = {"lenet5": lenet5}


def get_model(name: str, **kw) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kw)
