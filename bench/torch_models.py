"""The benchmark models in PyTorch, layer for layer the same as xpnn.models (MLP, SimpleCNN, LeNet)."""

from torch import nn


def build(name):
    """The torch.nn.Sequential for "mlp" (784-256-10), "cnn" (the seed CNN) or "lenet"."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(8 * 28 * 28, 128), nn.ReLU(), nn.Linear(128, 10),
        )
    if name == "lenet":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 10),
        )
    raise ValueError(f"unknown model {name!r}")
