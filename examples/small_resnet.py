"""A small ResNet-style CNN for trying `wattwise optimize` on a `module:factory` model.

    cd examples && ../.venv/bin/wattwise optimize small_resnet:build --input-shape 3,32,32 \
        --budget "fidelity>=0.99" --out /tmp/cnn-report

Random weights (seeded): fidelity compares the variant's outputs with these. Give `--weights`
with a safetensors file of your own training to optimize a trained model.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv → BatchNorm → ReLU → conv → BatchNorm, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inner = torch.relu(self.bn1(self.conv1(inputs)))
        return torch.relu(inputs + self.bn2(self.conv2(inner)))


def build(channels: int = 32, classes: int = 10) -> nn.Module:
    """3-channel images → `classes` logits: a stem conv, two basic blocks around a 2× pooling."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1),
        nn.ReLU(),
        BasicBlock(channels),
        nn.MaxPool2d(2),
        BasicBlock(channels),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, classes),
    ).eval()
