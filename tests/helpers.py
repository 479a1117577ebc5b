"""Small real models for tests (importable as `tests.helpers:linear_stack`)."""

from __future__ import annotations

import torch
from torch import nn


def linear_stack() -> nn.Module:
    """Three Linear layers with ReLUs: 64 → 128 → 128 → 10, seeded."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    ).eval()


def not_a_module() -> str:
    """A broken factory: returns a string."""
    return "not a module"


def wide_mlp() -> nn.Module:
    """64 → 2048 → 2048 → 10, seeded: slow enough per batch to kill a batch run mid-way."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
    ).eval()
