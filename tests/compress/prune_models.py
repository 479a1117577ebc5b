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
