"""The benchmark models in PyTorch, layer for layer the same as xpnn.models (MLP, SimpleCNN, LeNet,
and ResNet-20 with option-A shortcuts) and as bench.runners.build_wider (issue 20's "cnn3264" and
"torchmnist")."""

from collections import OrderedDict

from torch import nn


def build(name):
    """The torch.nn.Sequential for "mlp" (784-256-10), "cnn" (the seed CNN), "lenet", "cnn3264" or
    "torchmnist"; the
    :class:`ResNet` for "resnet20" (CIFAR-10: 3 channels, 10 classes)."""
    if name == "resnet20":
        return ResNet(3)
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
    if name == "cnn3264":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
        )
    if name == "torchmnist":  # pytorch/examples mnist/main.py's Net, log_softmax left to CrossEntropyLoss
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
        )
    raise ValueError(f"unknown model {name!r}")


class _ZeroPad(nn.Module):
    """Option A's shortcut: subsample by ``stride``, zero-pad the new channels after the old ones."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x):
        from torch.nn import functional as F

        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))


class _BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), bn1=nn.BatchNorm2d(c_out), relu=nn.ReLU(),
            conv2=nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), bn2=nn.BatchNorm2d(c_out),
        ))
        self.shortcut = _ZeroPad(c_in, c_out, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        return (self.body(x) + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """He et al.'s CIFAR ResNet with option-A shortcuts, written by hand as xpnn.models.ResNet is
    built: the same layers and names (less xpnn's ``.residual`` level), He-normal fan_in convolutions."""

    def __init__(self, blocks=3, in_channels=3, num_classes=10, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        c_in = widths[0]
        for i, width in enumerate(widths):
            stage = [_BasicBlock(c_in if j == 0 else width, width, 2 if i > 0 and j == 0 else 1) for j in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            c_in = width
        self.stages = len(widths)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))
