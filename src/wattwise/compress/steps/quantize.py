"""Quantization steps: int8 dynamic (torch.ao, torchao or ONNX Runtime), weight-only int8/int4.

    steps:
      - quantize: {method: int8_dynamic, granularity: per_channel}
    backend: onnxruntime

`implementation: auto` picks ONNX Runtime on the onnxruntime backend (the backend quantizes the
exported graph) and torch.ao's fbgemm kernels otherwise. Which is faster is not assumed: the
step report and the profile measure it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnx
from torch import nn

from wattwise.backends.onnx_quantize import (
    prepare_for_quantization,
    quantization_report,
    register_onnx_quantizer,
    selected_nodes,
    with_folded_norms,
)
from wattwise.compress.quantize_retry import left_out_report, quantize_leaving_out_breakers
from wattwise.compress.steps.base import LayerSelection, Step, StepOutcome, register_step
from wattwise.compress.steps.quantize_common import (
    require_cuda,
    resolve_implementation,
    selected_names,
)
from wattwise.errors import ConfigError
from wattwise.measure.size import size_note

Implementation = Literal["auto", "torchao", "torch_ao", "onnxruntime"]
# A quantized model runs one batch this size before it is kept (training data, never test).
PROBE_BATCH = 2


def torch_outcome(context, module: nn.Module, step: Step, record: dict, note: str) -> StepOutcome:
    """Quantize in PyTorch from `record`, leaving out layers that break the model when run
    (see compress.quantize_retry); the outcome carries the rebuild record, sizes and what was
    left out."""
    record = {"op": "quantize_torch", "layers": selected_names(module, step.layers), **record}
    # torch.ao's dynamic kernels are fbgemm (CPU only); torchao's run where the model is.
    on_cuda = context.device.startswith("cuda") and record.get("implementation") != "torch_ao"
    record.setdefault("device", "cuda" if on_cuda else "cpu")
    probe = context.task.example_inputs(PROBE_BATCH, "train")
    module, record, metrics, left_out = quantize_leaving_out_breakers(module, record, probe)
    notes, left_out_metrics = left_out_report(left_out, kept=len(record["layers"]))
    return StepOutcome(
        module,
        rebuild=[record],
        notes=[note, size_note(metrics), *notes],
        metrics={**metrics, **left_out_metrics},
    )


def apply_int8_dynamic(context, module: nn.Module, step: Int8Dynamic) -> StepOutcome:
    """int8 weights, activations quantized per batch at run time, in PyTorch."""
    implementation = resolve_implementation(step.implementation, context.backend.name)
    library = {
        "torch_ao": "torch.ao quantize_dynamic (fbgemm kernels)",
        "torchao": "torchao Int8DynamicActivationInt8WeightConfig",
    }[implementation]
    record = {
        "implementation": implementation,
        "scheme": "int8_dynamic",
        "granularity": step.granularity,
    }
    note = f"int8 dynamic ({step.granularity} weights) via {library}"
    return torch_outcome(context, module, step, record, note)


@register_step(apply_int8_dynamic)
class Int8Dynamic(Step):
    """`quantize: {method: int8_dynamic, granularity, implementation}`: int8 weights, int8
    activations quantized at run time (Linear layers unless `layers` says otherwise)."""

    kind = "quantize"
    method: Literal["int8_dynamic"] = "int8_dynamic"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    implementation: Implementation = "auto"

    def deferred_for(self, backend_name: str) -> bool:
        """ONNX Runtime quantizes the exported graph itself."""
        return resolve_implementation(self.implementation, backend_name) == "onnxruntime"

    def libraries_for(self, backend_name: str) -> tuple[str, ...]:
        """onnxruntime, torchao or torch (torch.ao), as the implementation resolves."""
        implementation = resolve_implementation(self.implementation, backend_name)
        return {"onnxruntime": ("onnxruntime",), "torchao": ("torchao",)}.get(
            implementation, ("torch",)
        )


@register_onnx_quantizer(Int8Dynamic)
def onnx_int8_dynamic(context, module: nn.Module, step: Int8Dynamic, source: Path, target: Path):
    """ONNX Runtime `quantize_dynamic` on the selected layers' MatMul/Conv nodes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = target.with_suffix(".prepared.onnx")
    model = prepare_for_quantization(source, prepared)
    example = context.task.example_inputs(1, "val")
    nodes = selected_nodes(
        model, with_folded_norms(module, example, selected_names(module, step.layers))
    )
    if step.layers == LayerSelection():
        # After transformer fusion the Q/K/V projections live inside Attention nodes
        # (quantized to QAttention); a step that touches every layer takes them too.
        nodes += [node.name for node in model.graph.node if node.op_type == "Attention"]
    quantize_dynamic(
        str(prepared),
        str(target),
        per_channel=step.granularity == "per_channel",
        weight_type=QuantType.QInt8,
        nodes_to_quantize=nodes,
        op_types_to_quantize=["MatMul", "Conv", "Attention"],
        # Shape inference cannot type the outputs of fused (com.microsoft) operators.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    what = f"int8 dynamic ({step.granularity} weights) via ONNX Runtime quantize_dynamic"
    return quantization_report(prepared, target, nodes, what)


def _no_onnxruntime(step: Step, backend_name: str) -> None:
    if backend_name == "onnxruntime":
        raise ConfigError(
            f"quantize {step.method} runs in PyTorch (torchao) and cannot be exported to ONNX; "
            "use backend eager or torch_compile, or int8_dynamic/static on onnxruntime"
        )


def apply_int8_weight_only(context, module: nn.Module, step: Int8WeightOnly) -> StepOutcome:
    """torchao `Int8WeightOnlyConfig`: int8 weights dequantized in the matmul."""
    _no_onnxruntime(step, context.backend.name)
    record = {
        "implementation": "torchao",
        "scheme": "int8_weight_only",
        "granularity": step.granularity,
        "group_size": step.group_size,
    }
    note = f"int8 weight-only ({step.granularity}) via torchao Int8WeightOnlyConfig"
    return torch_outcome(context, module, step, record, note)


@register_step(apply_int8_weight_only)
class Int8WeightOnly(Step):
    """`quantize: {method: int8_weight_only, granularity, group_size}` (torchao; CPU or CUDA).

    `group_size` applies to `granularity: per_group` (input channels per scale)."""

    kind = "quantize"
    libraries = ("torchao",)
    method: Literal["int8_weight_only"] = "int8_weight_only"
    granularity: Literal["per_channel", "per_tensor", "per_group"] = "per_channel"
    group_size: int = 128


def apply_int4_weight_only(context, module: nn.Module, step: Int4WeightOnly) -> StepOutcome:
    """int4 weights with one scale per `group_size` inputs (torchao)."""
    _no_onnxruntime(step, context.backend.name)
    kernel = step.kernel
    if kernel == "auto":
        kernel = "cuda" if context.device.startswith("cuda") else "cpu"
    if kernel == "cuda":
        require_cuda(
            context,
            "quantize int4_weight_only with kernel cuda (torchao Int4WeightOnlyConfig)",
            "on CPU use kernel: cpu (torchao IntxWeightOnlyConfig int4, group-wise)",
        )
    selected = set(selected_names(module, step.layers))
    for name, layer in module.named_modules():
        if name in selected and layer.in_features % step.group_size:
            raise ConfigError(
                f"layer {name} has {layer.in_features} inputs, not a multiple of group_size "
                f"{step.group_size}; choose a group_size that divides it or exclude the layer"
            )
    record = {
        "implementation": "torchao",
        "scheme": "int4_weight_only",
        "group_size": step.group_size,
        "kernel": kernel,
        "device": "cuda" if kernel == "cuda" else "cpu",
    }
    config = "Int4WeightOnlyConfig" if kernel == "cuda" else "IntxWeightOnlyConfig(int4)"
    note = f"int4 weight-only (groups of {step.group_size}) via torchao {config}"
    return torch_outcome(context, module, step, record, note)


@register_step(apply_int4_weight_only)
class Int4WeightOnly(Step):
    """`quantize: {method: int4_weight_only, group_size, kernel}`.

    kernel `cuda` is torchao's `Int4WeightOnlyConfig` (CUDA only); `cpu` is
    `IntxWeightOnlyConfig(int4)`, which runs anywhere; `auto` picks by device."""

    kind = "quantize"
    libraries = ("torchao",)
    method: Literal["int4_weight_only"] = "int4_weight_only"
    group_size: int = 128
    kernel: Literal["auto", "cpu", "cuda"] = "auto"
