"""Activation smoothing (SmoothQuant, Xiao et al. 2022) before per-tensor int8.

    steps:
      - smooth: {method: smoothquant, alpha: 0.5}
      - quantize: {method: int8_dynamic, granularity: per_tensor}
    backend: onnxruntime

Per-tensor int8 loses fidelity on transformers because a few input channels of a Linear carry
outlier activations that stretch the one activation scale. SmoothQuant moves that range into the
weights: per input channel j, s_j = max|X_j|^α / max|W_:,j|^(1−α) measured on calibration data;
the layer then computes (X / s) · (W · s)ᵀ, the same product in exact arithmetic.

Where the 1/s goes: SmoothQuant folds it into the preceding LayerNorm, which is exact only when
that LayerNorm feeds nothing but the smoothed Linear layers (pre-LN models). In post-LN BERT
(MiniLM) every LayerNorm output also feeds the next residual connection, and the FFN's down
projection follows a GELU, so folding would change the model. Here the 1/s stays an explicit
per-channel Mul in front of each smoothed MatMul (`SmoothedLinear`): exact for every Linear, at
the cost of one element-wise multiply per layer, and ONNX Runtime quantizes the smoothed
activation that the MatMul sees. The scales are saved with the weights, so the variant reloads
bit-identically.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from wattwise.backends.rebuild import get_submodule_parent, register_rebuilder
from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.compress.steps.quantize_common import calibration_batches, selected_names

CALIBRATION_BATCH = 16
MIN_SCALE = 1e-5


class SmoothedLinear(nn.Linear):
    """A Linear whose input is multiplied by `input_scale` (1/s) and weight by s per channel."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.register_buffer("input_scale", torch.ones(in_features))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs * self.input_scale, self.weight, self.bias)

    @classmethod
    def of(cls, layer: nn.Linear) -> SmoothedLinear:
        """An unsmoothed (scale 1) copy of `layer`, same weights, dtype and device."""
        smoothed = cls(layer.in_features, layer.out_features, layer.bias is not None)
        smoothed = smoothed.to(layer.weight.device, layer.weight.dtype)
        with torch.no_grad():
            smoothed.weight.copy_(layer.weight)
            if layer.bias is not None:
                smoothed.bias.copy_(layer.bias)
        return smoothed


def swap_in_smoothed(module: nn.Module, names: list[str]) -> nn.Module:
    """Replace each named Linear of `module` with a `SmoothedLinear` of the same weights."""
    for name in names:
        parent, child = get_submodule_parent(module, name)
        setattr(parent, child, SmoothedLinear.of(getattr(parent, child)))
    return module


def input_channel_maxima(module: nn.Module, names: list[str], batches) -> dict[str, torch.Tensor]:
    """max |x_j| per input channel of each named layer, over every calibration batch."""
    maxima: dict[str, torch.Tensor] = {}
    hooks = []

    def record(name: str):
        def hook(_layer, args):
            values = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            maxima[name] = torch.maximum(maxima[name], values) if name in maxima else values

        return hook

    for name in names:
        hooks.append(module.get_submodule(name).register_forward_pre_hook(record(name)))
    try:
        with torch.inference_mode():
            for inputs in batches:
                module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return maxima


def smoothing_scales(activation_max: torch.Tensor, weight: torch.Tensor, alpha: float):
    """s_j = max|X_j|^α / max|W_:,j|^(1−α), clamped away from 0 (channels that never fire)."""
    weight_max = weight.detach().abs().amax(dim=0).float().clamp(min=MIN_SCALE)
    scales = activation_max.clamp(min=MIN_SCALE).pow(alpha) / weight_max.pow(1 - alpha)
    return scales.clamp(min=MIN_SCALE)


def apply_smoothquant(context, module: nn.Module, step: SmoothQuant) -> StepOutcome:
    """Measure activation ranges on calibration data, then smooth every selected Linear."""
    names = selected_names(module, step.layers)
    batches = calibration_batches(
        context.task, step.calibration_samples, CALIBRATION_BATCH, context.seed
    )
    maxima = input_channel_maxima(module.eval(), names, batches)
    swap_in_smoothed(module, names)
    spread_before, spread_after = [], []
    with torch.no_grad():
        for name in names:
            layer = module.get_submodule(name)
            scales = smoothing_scales(maxima[name], layer.weight, step.alpha)
            layer.weight.mul_(scales.to(layer.weight.dtype))
            layer.input_scale.copy_((1.0 / scales).to(layer.input_scale.dtype))
            smoothed = maxima[name] / scales
            spread_before.append(float(maxima[name].max() / maxima[name].mean().clamp(min=1e-12)))
            spread_after.append(float(smoothed.max() / smoothed.mean().clamp(min=1e-12)))
    metrics = {
        "smoothed_layers": len(names),
        "alpha": step.alpha,
        "activation_max_over_mean_before": round(max(spread_before), 2),
        "activation_max_over_mean_after": round(max(spread_after), 2),
    }
    note = (
        f"SmoothQuant (alpha {step.alpha}) on {len(names)} Linear layers from "
        f"{step.calibration_samples} calibration samples: largest activation max/mean "
        f"{metrics['activation_max_over_mean_before']} → {metrics['activation_max_over_mean_after']}"
    )
    record = {"op": "smooth_linear", "layers": names}
    return StepOutcome(module, rebuild=[record], notes=[note], metrics=metrics)


@register_step(apply_smoothquant)
class SmoothQuant(Step):
    """`smooth: {method: smoothquant, alpha, calibration_samples}`: migrate activation outliers
    into the weights of the selected Linear layers (exact in fp32; helps per-tensor int8)."""

    kind = "smooth"
    method: Literal["smoothquant"] = "smoothquant"
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    calibration_samples: int = Field(64, gt=0)


@register_rebuilder("smooth_linear")
def _rebuild_smoothed(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    # The scales and smoothed weights come back with the saved weights.
    return swap_in_smoothed(module, record["layers"])
