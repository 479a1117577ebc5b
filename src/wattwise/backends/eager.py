"""The eager PyTorch backend: weights in safetensors, architecture rebuilt from records."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from wattwise.backends.base import Exported, register_backend
from wattwise.backends.rebuild import replay
from wattwise.models.weights import load_weights, save_weights

WEIGHTS = "model.safetensors"


def rebuild_module(directory: Path, manifest: dict[str, Any], source) -> nn.Module:
    """Fresh copy of the source architecture, rebuild records replayed, saved weights loaded."""
    module = replay(copy.deepcopy(source.module), manifest["rebuild"])
    return load_weights(module, Path(directory) / WEIGHTS).eval()


@register_backend("eager")
class EagerBackend:
    """Runs the PyTorch module as is."""

    name = "eager"
    needs_source_module = True

    def export(self, module: nn.Module, context, deferred: list, directory: Path) -> Exported:
        save_weights(module, Path(directory) / WEIGHTS)
        return Exported(module.eval(), [WEIGHTS], ["backend: eager PyTorch"])

    def load(self, directory: Path, manifest: dict[str, Any], source) -> nn.Module:
        return rebuild_module(directory, manifest, source)
