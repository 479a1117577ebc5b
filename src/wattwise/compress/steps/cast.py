"""Reduced-precision casts: bf16 on CPU or CUDA, fp16 on CUDA.

The model is wrapped so floating-point inputs are cast on the way in and outputs come back as
float32: callers and metrics never see the change of dtype.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from wattwise.backends.rebuild import register_rebuilder
from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.errors import UnsupportedOnDeviceError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CastInputs(nn.Module):
    """Runs `inner` in `dtype`: casts floating inputs in, returns float32 outputs."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cast = tuple(t.to(self.dtype) if t.is_floating_point() else t for t in inputs)
        return self.inner(*cast).float()


def cast_module(module: nn.Module, precision: str) -> nn.Module:
    """Wrap and cast `module` to "bf16" or "fp16"."""
    return CastInputs(module, DTYPES[precision])


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 matmuls natively here (AVX512-BF16 or AMX), as it is limited:
    `ONEDNN_MAX_CPU_ISA=AVX2` makes this False on a CPU that has the instructions."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def apply_cast(context, module: nn.Module, step: Step) -> StepOutcome:
    """Cast every floating-point parameter and buffer to the step's precision."""
    if step.method == "fp16" and not context.device.startswith("cuda"):
        raise UnsupportedOnDeviceError(
            "cast fp16 needs CUDA (fp16 matmuls on this CPU are emulated and slow); "
            "use cast bf16 on CPU"
        )
    notes = [f"weights and activations in {step.method}; outputs returned as float32"]
    metrics = {}
    if step.method == "bf16" and not context.device.startswith("cuda"):
        native = cpu_bf16_native()
        metrics["cpu_bf16_native"] = native
        notes.append(
            "this CPU runs bf16 matmuls natively (oneDNN: AVX512-BF16/AMX)"
            if native
            else "this CPU has no native bf16 for oneDNN: bf16 matmuls are emulated (slow)"
        )
    return StepOutcome(
        cast_module(module, step.method),
        rebuild=[{"op": "cast_inputs", "precision": step.method}],
        notes=notes,
        metrics=metrics,
    )


@register_step(apply_cast)
class CastBf16(Step):
    """`cast: {method: bf16}`: bfloat16 weights and activations (CPU or CUDA)."""

    kind = "cast"
    method: Literal["bf16"] = "bf16"


@register_step(apply_cast)
class CastFp16(Step):
    """`cast: {method: fp16}`: float16 weights and activations (CUDA only)."""

    kind = "cast"
    method: Literal["fp16"] = "fp16"


@register_rebuilder("cast_inputs")
def _rebuild_cast(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    return cast_module(module, record["precision"])
