"""Per-layer int8 sensitivity, simulated in PyTorch: how far the model's outputs move from fp32
when one Linear layer at a time runs as ONNX Runtime's dynamic int8 would run it.

ONNX Runtime's dynamic quantization rounds the activations to uint8 with one asymmetric scale
per tensor (`DynamicQuantizeLinear`, range widened to include 0) and the weights to symmetric
int8 (±127, per tensor or per output channel), then multiplies exactly in integers. Rounding the
same way in float (fake quantization) gives the same products up to float rounding, for the
cost of one PyTorch forward per layer instead of one graph quantization per layer.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


def fake_quant_activation(values: torch.Tensor) -> torch.Tensor:
    """uint8, one asymmetric scale over the whole tensor (ONNX DynamicQuantizeLinear)."""
    low = torch.clamp(values.min(), max=0.0)
    high = torch.clamp(values.max(), min=0.0)
    scale = (high - low) / 255.0
    if float(scale) == 0.0:
        return values
    zero_point = torch.clamp(torch.round(-low / scale), 0, 255)
    quantized = torch.clamp(torch.round(values / scale) + zero_point, 0, 255)
    return (quantized - zero_point) * scale


def fake_quant_weight(weight: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 in [-127, 127]; per output channel (row of a Linear weight) or tensor."""
    maxima = weight.abs().amax(dim=1, keepdim=True) if per_channel else weight.abs().amax()
    scale = torch.clamp(maxima, min=1e-12) / 127.0
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


@contextmanager
def simulated_int8(module: nn.Module, names: list[str], per_channel: bool):
    """Within the block, the named Linear layers compute with int8-rounded inputs and weights.

    A layer with an `input_scale` buffer (SmoothQuant) is rounded after that scale, as the
    exported graph's MatMul sees its input.
    """
    hooks = []

    def replace(layer: nn.Module, args, _output):
        inputs = args[0]
        scale = getattr(layer, "input_scale", None)
        if scale is not None:
            inputs = inputs * scale
        weight = fake_quant_weight(layer.weight, per_channel)
        return F.linear(fake_quant_activation(inputs), weight, layer.bias)

    for name in names:
        hooks.append(module.get_submodule(name).register_forward_hook(replace))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def mean_cosine(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over samples of the cosine between flattened outputs (1.0 = same direction)."""
    flat = outputs.double().reshape(len(outputs), -1)
    target = reference.double().reshape(len(reference), -1)
    return float(F.cosine_similarity(flat, target, dim=1).mean())


def simulated_fidelity(
    module: nn.Module, inputs: tuple, reference: torch.Tensor, names: list[str], per_channel: bool
) -> float:
    """Mean cosine to `reference` with the named layers int8-simulated."""
    with torch.inference_mode(), simulated_int8(module, names, per_channel):
        return mean_cosine(module(*inputs), reference)


def layer_sensitivity(
    module: nn.Module, inputs: tuple, reference: torch.Tensor, names: list[str], per_channel: bool
) -> dict[str, float]:
    """name → fidelity drop (1 − mean cosine) with only that layer int8-simulated."""
    return {
        name: 1.0 - simulated_fidelity(module, inputs, reference, [name], per_channel)
        for name in names
    }
