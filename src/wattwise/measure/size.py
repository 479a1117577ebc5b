"""Parameters and serialized size of a model's weights, and the bytes a quantization saved."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from safetensors.torch import save


def parameter_count(module: torch.nn.Module) -> int:
    """Number of weight elements: the module's own count if it has one (ONNX, quantized
    variants), else the elements of its parameters and floating/integer buffers in the state
    dict (quantized kernels keep weights in buffers)."""
    if hasattr(module, "parameter_count"):
        return int(module.parameter_count())
    total = 0
    for tensor in module.state_dict().values():
        if isinstance(tensor, torch.Tensor):
            total += tensor.numel()
    return total


def serialized_size_bytes(module: torch.nn.Module) -> int:
    """Bytes of the weights as saved: the module's own file size if it reports one, else the
    length of its state dict serialized with safetensors."""
    if hasattr(module, "weights_bytes"):
        return int(module.weights_bytes())
    state = {
        k: v.detach().contiguous().clone()
        for k, v in module.state_dict().items()
        if isinstance(v, torch.Tensor)
    }
    try:
        return len(save(state))
    except Exception:  # noqa: BLE001 - tensor subclasses safetensors cannot write
        return sum(v.numel() * v.element_size() for v in state.values())


def tensor_bytes(tensors: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """name → (dtype, bytes) of each tensor in a state dict or ONNX initializer map."""
    table = {}
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor):
            table[name] = (str(tensor.dtype), tensor.numel() * tensor.element_size())
    return table


def changed_bytes(
    before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]
) -> tuple[int, int]:
    """Bytes of the entries that a quantization replaced, before and after.

    Entries identical in name, dtype and size on both sides (biases, untouched layers) drop
    out, so the ratio is the one of the quantized layers' weights alone.
    """
    removed = sum(
        size for name, (dtype, size) in before.items() if after.get(name) != (dtype, size)
    )
    added = sum(size for name, (dtype, size) in after.items() if before.get(name) != (dtype, size))
    return removed, added


def size_metrics(before_bytes: int, after_bytes: int, layers: Iterable[str]) -> dict[str, Any]:
    """Metrics (and their ratio) for a step's report and the variant manifest."""
    ratio = before_bytes / after_bytes if after_bytes else float("nan")
    return {
        "quantized_layers": len(list(layers)),
        "quantized_weight_bytes_before": before_bytes,
        "quantized_weight_bytes_after": after_bytes,
        "quantized_weight_size_ratio": round(ratio, 3),
    }


def size_note(metrics: dict[str, Any]) -> str:
    """One line for the profile notes."""
    return (
        f"quantized layers' weights: {metrics['quantized_weight_bytes_before']:,} → "
        f"{metrics['quantized_weight_bytes_after']:,} bytes "
        f"({metrics['quantized_weight_size_ratio']}x smaller, {metrics['quantized_layers']} layers)"
    )
