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


class TokenGRUClassifier(nn.Module):
    """Token ids (batch, length) int64 → Embedding → GRU → Linear over the last state."""

    def __init__(self, vocabulary: int = 200, width: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.embedding(ids))
        return self.head(states[:, -1])


def token_gru() -> nn.Module:
    """A GRU classifier on token ids (vocabulary 200, 3 classes), seeded."""
    torch.manual_seed(0)
    return TokenGRUClassifier().eval()


class TokenTransformerClassifier(nn.Module):
    """Token ids → Embedding → nn.TransformerEncoder (2 layers) → mean → Linear."""

    def __init__(self, vocabulary: int = 100, width: int = 32, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        layer = nn.TransformerEncoderLayer(width, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(ids)).mean(dim=1))


def token_transformer() -> nn.Module:
    """A 2-layer nn.TransformerEncoder classifier on token ids (vocabulary 100), seeded."""
    torch.manual_seed(0)
    return TokenTransformerClassifier().eval()


class SharedWeightModel(nn.Module):
    """Reads a Linear's `.weight` directly in its own forward (as weight tying does), so
    quantizing that Linear breaks the model at run time, from the model's own code."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.linear(inputs, self.proj.weight, self.proj.bias)
        return self.head(torch.relu(hidden))


def shared_weight_model() -> nn.Module:
    """`SharedWeightModel`, seeded."""
    torch.manual_seed(0)
    return SharedWeightModel().eval()
