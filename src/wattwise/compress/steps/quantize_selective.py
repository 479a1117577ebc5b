"""Selective int8: quantize every layer except the fewest most sensitive ones, chosen by
measurement on calibration data, and save the choice so the recipe replays it exactly.

    steps:
      - quantize: {method: int8_selective, granularity: per_tensor, min_fidelity: 0.99}
    backend: {name: onnxruntime, exporter: torchscript}

How the layers are chosen (once; `keep_fp32` unset):
1. Sensitivity: each selected Linear alone is int8-simulated in PyTorch (see `sensitivity`) and
   the fidelity drop of the model's outputs (1 − mean cosine to fp32) on the calibration
   samples is its score.
2. The fewest most sensitive layers kept in fp32 such that the simulated model, every other
   layer int8, reaches `min_fidelity` (binary search on that count).
3. Confirmation with the real graph: ONNX Runtime quantizes it and runs the calibration
   samples; while its fidelity is below `min_fidelity`, the next most sensitive layer is kept too.
The variant's saved recipe holds the result as `keep_fp32: [layer, ...]`; compressing with that
recipe quantizes the same nodes without measuring anything. Only MatMul/Conv nodes are
quantized: after `fuse`, the fused Attention nodes stay fp32 (use int8_dynamic for QAttention).

Why not NNCF's `quantize_with_accuracy_control` (which also ranks layers and reverts the worst):
its ONNX path is static post-training quantization (activation ranges fixed at calibration),
and static int8 measured cosine 0.93 and 1.21x on MiniLM here, against 0.99 and 1.2-1.7x for
dynamic int8 (../shared/FIELD-NOTES.md); ranking under static quantization would choose for a
scheme we do not run. Ranking the dynamic scheme we ship needs the simulation above.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import onnx
import torch
from pydantic import Field
from torch import nn

from wattwise.backends.onnx_quantize import (
    prepare_for_quantization,
    quantization_report,
    register_onnx_quantizer,
    selected_nodes,
)
from wattwise.compress.steps.base import (
    OnnxRuntimeStep,
    refuse_outside_onnxruntime,
    register_step,
)
from wattwise.compress.steps.quantize_common import calibration_batches, selected_names
from wattwise.compress.steps.sensitivity import layer_sensitivity, mean_cosine, simulated_fidelity
from wattwise.errors import ConfigError

MAX_CONFIRMATIONS = 6  # real quantizations tried after the simulated choice


@register_step(refuse_outside_onnxruntime)
class Int8Selective(OnnxRuntimeStep):
    """`quantize: {method: int8_selective, granularity, min_fidelity, calibration_samples,
    keep_fp32}`: ONNX Runtime dynamic int8 on every selected layer except `keep_fp32`.

    `keep_fp32` unset: measured (see the module docstring) and written into the saved recipe.
    `min_fidelity`: mean cosine of the outputs to fp32's on the calibration (training) samples.
    """

    kind = "quantize"
    outside_onnxruntime = (
        "quantize int8_selective is applied by the onnxruntime backend; set 'backend: "
        "onnxruntime' (this recipe's backend is {backend})"
    )
    libraries = ("onnxruntime",)
    method: Literal["int8_selective"] = "int8_selective"
    granularity: Literal["per_tensor", "per_channel"] = "per_tensor"
    min_fidelity: float = Field(0.99, gt=0.0, le=1.0)
    calibration_samples: int = Field(32, gt=0)
    keep_fp32: tuple[str, ...] | None = None

    def resolved(self, metrics: dict[str, Any]) -> Int8Selective:
        """This step with the measured `keep_fp32` filled in (what the saved recipe holds)."""
        return self.model_copy(update={"keep_fp32": tuple(metrics["keep_fp32"])})


def quantize_graph(prepared: Path, target: Path, nodes: list[str], per_channel: bool) -> None:
    """ONNX Runtime dynamic int8 on exactly `nodes`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(prepared),
        str(target),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        op_types_to_quantize=["MatMul", "Conv"],
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def graph_fidelity(path: Path, inputs: tuple, reference: torch.Tensor, context) -> float:
    """Mean cosine of an ONNX graph's outputs to `reference` (same session settings as saved)."""
    from wattwise.models.onnx_model import OnnxModule

    spec = context.backend
    runner = OnnxModule(path, spec.threads or torch.get_num_threads(), spec.optimization)
    return mean_cosine(runner(*inputs), reference)


def choose_fp32_layers(context, module, step, names, prepared, model, target):
    """(layers kept in fp32, measurement facts): see the module docstring."""
    per_channel = step.granularity == "per_channel"
    (inputs,) = list(
        calibration_batches(
            context.task, step.calibration_samples, step.calibration_samples, context.seed
        )
    )
    with torch.inference_mode():
        reference = module(*inputs)
    drops = layer_sensitivity(module, inputs, reference, names, per_channel)
    ranking = sorted(names, key=lambda name: drops[name], reverse=True)

    def simulated(kept: int) -> float:
        return simulated_fidelity(module, inputs, reference, ranking[kept:], per_channel)

    low, high = 0, len(ranking)  # the smallest count that holds lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        if simulated(middle) >= step.min_fidelity:
            high = middle
        else:
            low = middle + 1
    kept, real, tries = low, 0.0, 0
    while kept < len(ranking):
        nodes = selected_nodes(model, ranking[kept:])
        quantize_graph(prepared, target, nodes, per_channel)
        real, tries = graph_fidelity(target, inputs, reference, context), tries + 1
        if real >= step.min_fidelity or tries >= MAX_CONFIRMATIONS:
            break
        kept += 1
    facts = {
        "sensitivity": {name: round(drops[name], 6) for name in ranking},
        "simulated_fidelity": round(simulated(low), 6),
        "calibration_fidelity": round(real, 6),
        "calibration_samples": len(inputs[0]),
        "real_quantizations": tries,
    }
    return ranking[:kept], facts


@register_onnx_quantizer(Int8Selective)
def onnx_int8_selective(context, module: nn.Module, step: Int8Selective, source, target):
    """Quantize all selected layers but `keep_fp32` (measured first when unset)."""
    prepared = target.with_suffix(".prepared.onnx")
    model = prepare_for_quantization(source, prepared)
    names = selected_names(module, step.layers)
    facts: dict[str, Any] = {}
    if step.keep_fp32 is None:
        keep, facts = choose_fp32_layers(context, module, step, names, prepared, model, target)
    else:
        keep = list(step.keep_fp32)
        unknown = sorted(set(keep) - set(names))
        if unknown:
            raise ConfigError(
                f"quantize int8_selective: keep_fp32 names {', '.join(unknown[:3])}, which the "
                "model's selected Linear layers do not include; remove them or re-measure "
                "(omit keep_fp32)"
            )
    nodes = selected_nodes(model, [name for name in names if name not in keep])
    quantize_graph(prepared, target, nodes, step.granularity == "per_channel")
    what = (
        f"int8 dynamic ({step.granularity} weights) via ONNX Runtime on {len(names) - len(keep)} "
        f"of {len(names)} layers; kept fp32 "
        + ("(measured)" if facts else "(from the recipe)")
        + f": {', '.join(keep) or 'none'}"
    )
    notes, metrics = quantization_report(prepared, target, nodes, what)
    if "calibration_fidelity" in facts:
        notes.append(
            f"selective int8: calibration fidelity {facts['calibration_fidelity']:.4f} "
            f"(target {step.min_fidelity}) with {len(keep)} layer(s) in fp32"
        )
    return notes, {**metrics, "keep_fp32": keep, **facts}
