"""Parameters and serialized size of a model's weights."""

from __future__ import annotations

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
