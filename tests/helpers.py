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
