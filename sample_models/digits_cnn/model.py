"""digits_cnn: a small residual conv net for 32x32 grey digits (about 109 M MACs per image).

Most of its compute sits in 3x3 convolutions at full resolution, so batch-1 latency is dominated
by arithmetic rather than per-operator overhead: the regime where graph optimizations and int8
kernels show their real effect. Width 48 rather than 32: at 32 channels the fixed costs around
int8 kernels (the 1-channel stem, layout transposes, re-quantization) were ~10% of int8 latency
(measured with ONNX Runtime on a Zen 4 core: int8/fp32 p50 0.61 at width 32, 0.54 at width 48).
"""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 48, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.layer3 = BasicBlock(2 * width, 4 * width, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def build(width: int = 48) -> DigitsCNN:
    """Factory used by optkit (``model.py:build``): returns the untrained architecture."""
    return DigitsCNN(width=width)
