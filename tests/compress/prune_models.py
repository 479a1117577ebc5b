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


def small_resnet() -> nn.Module:
    """`examples/small_resnet.py`'s CNN at 16 channels, for 3×16×16 images: a stem conv and two
    basic blocks (5 convolutions, 4 of them followed by a BatchNorm that an ONNX export folds
    into them) and a 10-class Linear."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "small_resnet.py"
    spec = importlib.util.spec_from_file_location("wattwise_example_small_resnet", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.build(channels=16)
