"""ONNX Runtime quantization of an exported graph: the steps the onnxruntime backend applies.

A step class registers its graph quantizer with `@register_onnx_quantizer(StepClass)`; the
backend calls it as `quantizer(context, module, step, source_path, target_path) -> (notes,
metrics)`. `module` is the PyTorch model that was exported: layer selection runs on it, and a
graph node is quantized when the module that produced it (the exporter's `name_scopes`
metadata) is selected.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from wattwise.measure.size import changed_bytes, size_metrics, size_note

OnnxQuantizer = Callable[[Any, nn.Module, Any, Path, Path], tuple[list[str], dict[str, Any]]]
ONNX_QUANTIZERS: dict[type, OnnxQuantizer] = {}
# Operators that hold a layer's weights; Gemm is rewritten to MatMul + Add first because ONNX
# Runtime's dynamic quantization has integer kernels for MatMul but not for Gemm.
WEIGHT_OPS = ("MatMul", "Conv")


def register_onnx_quantizer(step_class: type):
    """Function decorator: the graph quantizer the onnxruntime backend runs for `step_class`."""

    def decorate(function: OnnxQuantizer) -> OnnxQuantizer:
        ONNX_QUANTIZERS[step_class] = function
        return function

    return decorate


def owner_module(node: onnx.NodeProto) -> str | None:
    """Fully qualified name of the PyTorch module a node was exported from, if recorded.

    The dynamo exporter records it in the node's metadata; the TorchScript exporter names the
    node by its module scope instead ("/encoder/layer.0/output/dense/MatMul").
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(prop.value)
            return scopes[-2] if len(scopes) >= 2 else None
    if node.name.startswith("/") and node.name.count("/") >= 2:
        return ".".join(node.name.strip("/").split("/")[:-1])
    return None


def gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite Gemm(A, W, b) with a constant W as MatMul(A, Wᵀ) + b, keeping the metadata."""
    initializers = {t.name: t for t in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in initializers or not plain:
            nodes.append(node)
            continue
        if attributes.get("transA", 0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attributes.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)
        weight_name = f"{node.input[1]}_matmul"
        model.graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        matmul = onnx.helper.make_node(
            "MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_matmul"
        )
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if has_bias:
            add = onnx.helper.make_node(
                "Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"
            )
            nodes.append(add)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for node in model.graph.node for name in node.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def prepare_for_quantization(source: Path, target: Path) -> onnx.ModelProto:
    """Shape inference (ONNX Runtime's pre-processing) and the Gemm rewrite; saves `target`.

    Symbolic shape inference fails on the MiniLM graph (FIELD-NOTES) and ONNX Runtime's
    optimizer would fuse MatMul + Add back into Gemm, so only ONNX shape inference runs.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(target), skip_optimization=True, skip_symbolic_shape=True)
    model = gemm_to_matmul(onnx.load(str(target)))
    onnx.save_model(model, str(target))
    return model


def with_folded_norms(module: nn.Module, inputs: tuple, names: list[str]) -> list[str]:
    """`names` plus every BatchNorm layer that reads one of those convolutions' outputs
    directly: the dynamo exporter folds such a norm into the Conv node and records the node as
    the norm's ("2.bn1", not "2.conv1"), so selecting by the conv's name alone missed 4 of a
    small ResNet's 5 convolutions."""
    layers = dict(module.named_modules())
    # The outputs themselves are kept (not only their ids), so no later tensor can reuse an id.
    conv_outputs: dict[int, torch.Tensor] = {}
    folded: list[str] = []
    handles = []
    for name in names:
        if isinstance(layers.get(name), nn.modules.conv._ConvNd):

            def remember(_layer, _args, output) -> None:
                conv_outputs[id(output)] = output

            handles.append(layers[name].register_forward_hook(remember))
    for name, layer in layers.items():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):

            def check(_layer, args, name=name) -> None:
                if args and conv_outputs.get(id(args[0])) is args[0]:
                    folded.append(name)

            handles.append(layer.register_forward_pre_hook(check))
    try:
        if handles:
            device = next((p.device for p in module.parameters()), torch.device("cpu"))
            with torch.inference_mode():
                module(*(t.to(device) for t in inputs))
    finally:
        for handle in handles:
            handle.remove()
    return names + [name for name in folded if name not in names]


def selected_nodes(model: onnx.ModelProto, layer_names: list[str]) -> list[str]:
    """Names of the weight-holding nodes that the selected PyTorch layers produced."""
    initializers = {t.name for t in model.graph.initializer}
    wanted = set(layer_names)
    return [
        node.name
        for node in model.graph.node
        if node.op_type in WEIGHT_OPS
        and any(i in initializers for i in node.input[1:2])
        and owner_module(node) in wanted
    ]


def initializer_bytes(path: Path) -> dict[str, tuple[str, int]]:
    """name → (dtype, bytes) of every initializer of an ONNX file."""
    model = onnx.load(str(path))
    table = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        table[tensor.name] = (str(array.dtype), int(array.nbytes))
    return table


def quantization_report(prepared: Path, quantized: Path, nodes: list[str], what: str):
    """Notes and metrics comparing the prepared and quantized graphs' weights."""
    before, after = changed_bytes(initializer_bytes(prepared), initializer_bytes(quantized))
    metrics = size_metrics(before, after, nodes)
    return [what, size_note(metrics)], metrics
