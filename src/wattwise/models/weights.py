"""Weights in and out through safetensors only (never pickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from wattwise.errors import ModelLoadError, WeightsMismatchError
from wattwise.paths import atomic_write_bytes


def save_weights(module: torch.nn.Module, path: Path) -> None:
    """Save the state dict as safetensors, atomically (shared tensors are cloned apart)."""
    state = {
        name: tensor.detach().contiguous().clone()
        for name, tensor in module.state_dict().items()
        if isinstance(tensor, torch.Tensor)
    }
    atomic_write_bytes(Path(path), save(state))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing, truncated or corrupt file raises ModelLoadError."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} not found; check the path")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"weights file {path} is corrupt or truncated ({str(error).splitlines()[0]}); "
            "re-export it with safetensors.torch.save_file"
        ) from error


def load_weights(module: torch.nn.Module, path: Path) -> torch.nn.Module:
    """Load a safetensors file into `module` strictly, naming missing/unexpected/mismatched keys."""
    state = read_weights(path)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)}≠{tuple(expected[key].shape)}"
        for key in set(state) & set(expected)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches {_short(mismatched)}")
        raise WeightsMismatchError(
            f"weights file {path} does not match the model: {'; '.join(parts)}; "
            "pass the weights saved from this architecture"
        )
    module.load_state_dict(state, strict=True)
    return module


def _short(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
