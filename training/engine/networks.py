"""The networks a run can train, built for a dataset's channels, size and classes."""

import torch
import torchvision
from torch import nn

NETWORKS = ("lenet", "resnet18")
# What each network's inputs are multiplied by (after any mean is subtracted): 1/255 (Caffe's MNIST
# LeNet, 0.00390625). DIGITS' own LeNet prototxt pairs its default mean image with 0.0125; on the
# 3750-digit demo that measured no better (bench/bench_accuracy.py), so inputs stay in [0, 1].
INPUT_SCALES = {"lenet": 1.0 / 255.0, "resnet18": 1.0 / 255.0}


class LeNet(nn.Module):
    """DIGITS' Caffe LeNet: conv 20@5x5, max pool 2, conv 50@5x5, max pool 2, fc 500, ReLU, fc classes.

    The flatten size is computed from the input size, so any input from 16x16 up works. Weights start
    as in Caffe's prototxt: Xavier filler for weights, zero bias.
    """

    def __init__(self, *, channels: int, height: int, width: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 20, kernel_size=5),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2, 2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, height, width)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _resnet18(*, channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if min(height, width) < 64:
        # The ImageNet stem (7x7 stride 2, then max pool) would shrink a 28x28 digit to 7x7 before
        # the first block; a 3x3 stride 1 stem keeps the detail small images have.
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def input_scale(name: str) -> float:
    """The factor `name`'s inputs are multiplied by after the mean is subtracted."""
    return INPUT_SCALES[name]


def min_size(name: str) -> int:
    """The smallest height and width a network accepts."""
    return {"lenet": 16, "resnet18": 8}[name]


def build_network(name: str, *, channels: int, height: int, width: int, num_classes: int) -> nn.Module:
    """A freshly initialised network (initialisation draws from torch's global RNG: seed it first)."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; one of {', '.join(NETWORKS)}")
    if min(height, width) < min_size(name):
        raise ValueError(f"{name} needs images of at least {min_size(name)}x{min_size(name)} pixels")
    if num_classes < 2:
        raise ValueError("a classifier needs at least two classes")
    if name == "lenet":
        return LeNet(channels=channels, height=height, width=width, num_classes=num_classes)
    return _resnet18(channels=channels, height=height, width=width, num_classes=num_classes)
