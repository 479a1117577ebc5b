"""Quantizing PyTorch layers in place with torch.ao or torchao, from a JSON-able record.

The same record drives the step (at compress time) and the rebuilder (at load time), so a
variant is rebuilt by the very call that made it; `quantize_storage` then loads the saved
integer weights over the freshly quantized ones.

A record: {"op": "quantize_torch", "implementation": "torch_ao" | "torchao",
"scheme": "int8_dynamic" | "int8_weight_only" | "int4_weight_only" | "float8_dynamic",
"granularity": ..., "group_size": ..., "kernel": "cpu" | "cuda", "layers": [fqn, ...],
"device": "cpu" | "cuda"}.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from wattwise.backends.rebuild import register_rebuilder
from wattwise.compress.quantize_storage import make_storable
from wattwise.errors import ConfigError
from wattwise.measure.size import changed_bytes, size_metrics, tensor_bytes

TorchaoConfigBuilder = Callable[[dict[str, Any]], Any]
TORCHAO_CONFIGS: dict[str, TorchaoConfigBuilder] = {}


def torchao_config(scheme: str):
    """Decorator registering the builder of the torchao config for a scheme."""

    def decorate(function: TorchaoConfigBuilder) -> TorchaoConfigBuilder:
        TORCHAO_CONFIGS[scheme] = function
        return function

    return decorate


def _granularity(record: dict[str, Any]):
    from torchao.quantization import PerGroup, PerRow, PerTensor

    name = record.get("granularity", "per_channel")
    if name == "per_tensor":
        return PerTensor()
    if name == "per_group":
        return PerGroup(record["group_size"])
    return PerRow()


@torchao_config("int8_dynamic")
def _int8_dynamic(record: dict[str, Any]):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    return Int8DynamicActivationInt8WeightConfig(granularity=_granularity(record))


@torchao_config("int8_weight_only")
def _int8_weight_only(record: dict[str, Any]):
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(granularity=_granularity(record))


@torchao_config("int4_weight_only")
def _int4_weight_only(record: dict[str, Any]):
    from torchao.quantization import Int4WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup

    if record.get("kernel") == "cuda":
        # tinygemm's tile-packed layout runs on torch's own CUDA kernel (_weight_int4pack_mm);
        # torchao's default "plain" layout needs the separate mslk package. It takes bf16
        # weights (see _torchao) and casts activations to bf16 and back itself.
        return Int4WeightOnlyConfig(
            group_size=record["group_size"], int4_packing_format="tile_packed_to_4d"
        )
    # The CPU path: int4 values (held unpacked in int8 by torchao, packed two per byte when
    # saved), symmetric per-group scales.
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(record["group_size"]))


@torchao_config("float8_dynamic")
def _float8_dynamic(record: dict[str, Any]):
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor

    granularity = PerTensor() if record.get("granularity") == "per_tensor" else PerRow()
    return Float8DynamicActivationFloat8WeightConfig(granularity=granularity)


def _torch_ao_dynamic(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    if record["scheme"] != "int8_dynamic":
        raise ConfigError(
            f"implementation torch_ao offers int8_dynamic only, not {record['scheme']}; "
            "use implementation torchao"
        )
    module = module.cpu()  # fbgemm kernels: CPU only
    per_channel = record.get("granularity", "per_channel") == "per_channel"
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        # torch.ao eager quantization is deprecated in favour of torchao, but its fbgemm
        # dynamic kernels are the fast int8 path on CPUs without VNNI.
        warnings.simplefilter("ignore")
        return quantize_dynamic(
            module, {name: qconfig for name in record["layers"]}, dtype=torch.qint8, inplace=True
        )


def _needs_bf16_weights(record: dict[str, Any]) -> bool:
    """tinygemm int4 (CUDA) and torchao's row-wise float8 take bf16 weights only."""
    if record["scheme"] == "int4_weight_only":
        return record.get("kernel") == "cuda"
    return record["scheme"] == "float8_dynamic" and record.get("granularity") != "per_tensor"


def _torchao(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    from torchao.quantization import quantize_

    layers = set(record["layers"])
    config = TORCHAO_CONFIGS[record["scheme"]](record)
    device = record.get("device", "cpu")
    module = module.to(device)
    if _needs_bf16_weights(record):
        for name, layer in module.named_modules():
            if name in layers:  # biases stay fp32; these kernels add them in the output dtype
                layer.weight.data = layer.weight.data.to(torch.bfloat16)
    quantize_(module, config, filter_fn=lambda _module, name: name in layers)
    return module


def apply_quantization_record(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Quantize the record's layers of `module` as the record says; storable afterwards."""
    quantize = _torch_ao_dynamic if record["implementation"] == "torch_ao" else _torchao
    return make_storable(quantize(module, record))


def layer_tensors(module: nn.Module, layers: list[str]) -> dict[str, torch.Tensor]:
    """The state-dict entries (as saved) of the given layers."""
    prefixes = tuple(f"{name}." for name in layers)
    return {k: v for k, v in module.state_dict().items() if k.startswith(prefixes)}


def quantize_with_record(module: nn.Module, record: dict[str, Any]):
    """Apply a record and measure the quantized layers' bytes; returns (module, metrics)."""
    before = tensor_bytes(layer_tensors(module, record["layers"]))
    module = apply_quantization_record(module, record)
    after = tensor_bytes(layer_tensors(module, record["layers"]))
    removed, added = changed_bytes(before, after)
    return module, size_metrics(removed, added, record["layers"])


@register_rebuilder("quantize_torch")
def _rebuild(module: nn.Module, record: dict[str, Any]) -> nn.Module:
    return apply_quantization_record(module, record)
