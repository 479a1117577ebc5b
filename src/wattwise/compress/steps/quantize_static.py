"""Static post-training int8 quantization (ONNX Runtime QDQ, calibrated on the task's training
data) and the fp8 cast (torchao float8, CUDA only).

Static quantization fixes every activation's scale from `calibration_samples` training
samples, so no scale is computed at run time. Here it runs through ONNX Runtime only: PT2E's
converted graphs gain speed only under inductor with VNNI kernels, which this CPU lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from torch import nn

from wattwise.backends.onnx_quantize import (
    prepare_for_quantization,
    quantization_report,
    register_onnx_quantizer,
    selected_nodes,
    with_folded_norms,
)
from wattwise.compress.steps.base import (
    OnnxRuntimeStep,
    Step,
    StepOutcome,
    refuse_outside_onnxruntime,
    register_step,
)
from wattwise.compress.steps.quantize import torch_outcome
from wattwise.compress.steps.quantize_common import (
    calibration_batches,
    require_cuda,
    selected_names,
)
from wattwise.errors import ConfigError

CALIBRATION_BATCH = 16
STATIC_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@register_step(refuse_outside_onnxruntime)
class StaticInt8(OnnxRuntimeStep):
    """`quantize: {method: static, granularity, calibration_samples, calibration}`: int8
    weights and activations with scales fixed by calibration on training samples."""

    kind = "quantize"
    outside_onnxruntime = (
        "quantize static runs through ONNX Runtime (QDQ with calibration); set "
        "'backend: onnxruntime' (the recipe has {backend}) or use int8_dynamic"
    )
    method: Literal["static"] = "static"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    calibration_samples: int = 128
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"


class _TaskCalibrationReader:
    """ONNX Runtime's CalibrationDataReader over the task's training inputs."""

    def __init__(self, batches, names: list[str]) -> None:
        self._feeds = iter(
            [{n: t.numpy() for n, t in zip(names, inputs, strict=True)} for inputs in batches]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


@register_onnx_quantizer(StaticInt8)
def onnx_static(context, module: nn.Module, step: StaticInt8, source: Path, target: Path):
    """ONNX Runtime `quantize_static` in QDQ format (uint8 activations, int8 weights)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    prepared = target.with_suffix(".prepared.onnx")
    model = prepare_for_quantization(source, prepared)
    # Convolutions too: static int8 is what runs them as QLinearConv (dynamic int8 leaves them
    # fp32). With Linear only, a CNN's "static int8" variant quantized 1,280 bytes of weights,
    # its classifier, and was ONNX Runtime fp32 under an int8 name.
    selected = selected_names(module, step.layers, STATIC_LAYER_TYPES)
    example = context.task.example_inputs(1, "val")
    nodes = selected_nodes(model, with_folded_norms(module, example, selected))
    names = [i.name for i in onnx.load(str(prepared)).graph.input]
    batches = calibration_batches(
        context.task, step.calibration_samples, CALIBRATION_BATCH, context.seed
    )
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    quantize_static(
        str(prepared),
        str(target),
        _TaskCalibrationReader(batches, names),
        quant_format=QuantFormat.QDQ,
        per_channel=step.granularity == "per_channel",
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        op_types_to_quantize=["MatMul", "Conv"],
        calibrate_method=methods[step.calibration],
    )
    what = (
        f"int8 static QDQ ({step.granularity} weights) via ONNX Runtime quantize_static, "
        f"{step.calibration} calibration on {step.calibration_samples} training samples"
    )
    return quantization_report(prepared, target, nodes, what)


def apply_fp8(context, module: nn.Module, step: CastFp8) -> StepOutcome:
    """torchao `Float8DynamicActivationFloat8WeightConfig` on the selected Linear layers."""
    require_cuda(
        context,
        "cast fp8 (torchao float8)",
        "float8 matmuls need an sm89+ GPU; on CPU use cast bf16 or quantize int8_dynamic",
    )
    # torch._scaled_mm needs both dimensions multiples of 16; torchao silently leaves other
    # layers in high precision, so they are left out here, by name, with a note.
    layers = dict(module.named_modules())
    selected = selected_names(module, step.layers)
    fits = [name for name in selected if all(d % 16 == 0 for d in layers[name].weight.shape)]
    if not fits:
        raise ConfigError(
            "cast fp8: no selected Linear layer has both dimensions a multiple of 16, which "
            "float8 matmuls (torch._scaled_mm) need; select larger layers or use cast bf16"
        )
    record = {
        "implementation": "torchao",
        "scheme": "float8_dynamic",
        "granularity": step.granularity,
        "device": "cuda",
        "layers": fits,
    }
    note = "fp8 (e4m3) weights and activations"
    if skipped := [name for name in selected if name not in fits]:
        note += f"; left in fp32 (a dimension not a multiple of 16): {', '.join(skipped)}"
    return torch_outcome(context, module, step, record, note)


@register_step(apply_fp8)
class CastFp8(Step):
    """`cast: {method: fp8, granularity}`: float8 e4m3 weights and dynamic activations (CUDA)."""

    kind = "cast"
    method: Literal["fp8"] = "fp8"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
