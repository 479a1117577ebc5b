"""Small real models for the pruning tests (factories: `tests.compress.prune_models:NAME`)."""

from __future__ import annotations

import torch
from torch import nn


class NoGradBlock(nn.Module):
    """A Linear run under `torch.no_grad()`: autograd (and so torch-pruning) cannot see it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.linear(inputs)


def opaque_net() -> nn.Module:
    """64 → 32 → (no-grad 32 → 32) → 32 → 10: its middle layer is invisible to autograd."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 32),
        nn.ReLU(),
        NoGradBlock(32),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    ).eval()


class ResidualBlock(nn.Module):
    """conv → BatchNorm → ReLU → conv → BatchNorm, plus the input (a ResNet basic block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inner = torch.relu(self.bn1(self.conv1(inputs)))
        return torch.relu(inputs + self.bn2(self.conv2(inner)))


def small_resnet() -> nn.Module:
    """3×16×16 images → 10 logits through a stem conv and two residual blocks (5 convolutions,
    4 of them followed by a BatchNorm that an ONNX export folds into them)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        ResidualBlock(16),
        ResidualBlock(16),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
