"""Quantized layers saved as plain tensors, so safetensors can hold them (never pickle).

PyTorch's quantized layers keep their weights in forms safetensors cannot store: torch.ao's
dynamic `Linear` holds a packed-params object, torchao's configs swap `weight` for a tensor
subclass (`Int8Tensor`, `IntxUnpackedToInt8Tensor`, ...). `make_storable(model)` adds two
state-dict hooks to the model's root:

- saving, each such weight becomes its plain parts: `<layer>.weight_int8`, `.weight_scale`,
  `.weight_zero_point` for torch.ao; `<layer>.weight.<inner>` for a torchao subclass (its
  `__tensor_flatten__` parts). int4 values are packed two to a byte (`.qdata_int4x2`), which is
  what makes an int4 file ~8x smaller than fp32 instead of ~4x.
- loading, the parts are put back into the layer that the rebuild record re-created (same
  config, so the same subclass and metadata) — the reloaded layer is bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

INT4_SUFFIX = "qdata_int4x2"
_MARK = "_wattwise_quantized_storage"


def _is_torch_ao_dynamic_linear(module: nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return isinstance(module, DynamicLinear)


def _subclass_parameters(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Direct parameters of `module` that are tensor subclasses with flatten/unflatten."""
    found = []
    for name, parameter in module._parameters.items():
        if parameter is None:
            continue
        data = parameter.data if isinstance(parameter, nn.Parameter) else parameter
        if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):
            found.append((name, data))
    return found


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """int8 values in [-8, 7] → uint8, two per byte (last dim must be even)."""
    nibbles = (values.to(torch.int16) & 0xF).to(torch.uint8)
    return nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: uint8 → int8 values in [-8, 7]."""
    low = (packed & 0xF).to(torch.int16)
    high = (packed >> 4).to(torch.int16)
    values = torch.stack((low, high), dim=-1).flatten(-2)
    return torch.where(values > 7, values - 16, values).to(torch.int8)


def _is_int4(context: Any) -> bool:
    return isinstance(context, dict) and context.get("target_dtype") == torch.int4


def _save_hook(root: nn.Module, state: dict[str, Any], prefix: str, _metadata) -> None:
    for name, module in root.named_modules():
        key = f"{prefix}{name}." if name else prefix
        if _is_torch_ao_dynamic_linear(module) and f"{key}_packed_params._packed_params" in state:
            weight, bias = state.pop(f"{key}_packed_params._packed_params")
            state.pop(f"{key}_packed_params.dtype", None)
            state.update(_torch_ao_parts(key, weight, bias))
            continue
        for parameter_name, data in _subclass_parameters(module):
            if f"{key}{parameter_name}" not in state:
                continue
            state.pop(f"{key}{parameter_name}")
            inner_names, context = data.__tensor_flatten__()
            for inner in inner_names:
                tensor = getattr(data, inner).detach()
                if inner == "qdata" and _is_int4(context) and tensor.shape[-1] % 2 == 0:
                    state[f"{key}{parameter_name}.{INT4_SUFFIX}"] = pack_int4(tensor)
                elif inner == "zero_point" and not tensor.any():
                    # Symmetric schemes have all-zero zero points: storing them would cost an
                    # int4 layer a fifth of its size at group size 32. Loading refills zeros.
                    continue
                else:
                    state[f"{key}{parameter_name}.{inner}"] = tensor


def _torch_ao_parts(key: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict:
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = weight.q_per_channel_scales().to(torch.float64)
        zero_point = weight.q_per_channel_zero_points().to(torch.int64)
    else:
        scale = torch.tensor([weight.q_scale()], dtype=torch.float64)
        zero_point = torch.tensor([weight.q_zero_point()], dtype=torch.int64)
    # torch.ao keeps float64 scales and int64 zero points per row; both fit exactly in
    # float32/int8 here (observers compute scales in float32), which keeps narrow layers small.
    if torch.equal(scale.float().double(), scale):
        scale = scale.float()
    parts = {
        f"{key}weight_int8": weight.int_repr(),
        f"{key}weight_scale": scale,
        f"{key}weight_zero_point": zero_point.to(torch.int8),
    }
    if bias is not None:
        parts[f"{key}bias"] = bias.detach()
    return parts


def _load_hook(root: nn.Module, state: dict[str, Any], prefix: str, *_args) -> None:
    for name, module in root.named_modules():
        key = f"{prefix}{name}." if name else prefix
        if _is_torch_ao_dynamic_linear(module) and f"{key}weight_int8" in state:
            _restore_torch_ao(module, key, state)
            continue
        for parameter_name, template in _subclass_parameters(module):
            full = f"{key}{parameter_name}"
            inner_names, context = template.__tensor_flatten__()
            if not any(k.startswith(full + ".") for k in state):
                continue
            inner = {}
            for inner_name in inner_names:
                value = _pop_inner(state, full, inner_name, getattr(template, inner_name))
                inner[inner_name] = value.to(getattr(template, inner_name).device)
            restored = type(template).__tensor_unflatten__(
                inner, context, template.shape, template.stride()
            )
            module._parameters[parameter_name] = nn.Parameter(restored, requires_grad=False)
            state[full] = restored


def _pop_inner(state: dict[str, Any], full: str, inner: str, template: torch.Tensor):
    """One saved part of a subclass weight, unpacked (int4) or refilled (zero points)."""
    if inner == "qdata" and f"{full}.{INT4_SUFFIX}" in state:
        return unpack_int4(state.pop(f"{full}.{INT4_SUFFIX}"))
    if inner == "zero_point" and f"{full}.{inner}" not in state:
        return torch.zeros_like(template)
    return state.pop(f"{full}.{inner}")


def _restore_torch_ao(module: nn.Module, key: str, state: dict[str, Any]) -> None:
    """Put back what torch.ao's loader reads for a state dict without version metadata."""
    values = state.pop(f"{key}weight_int8")
    scale = state.pop(f"{key}weight_scale").to(torch.float64)
    zero_point = state.pop(f"{key}weight_zero_point").to(torch.int64)
    if scale.numel() == 1 and module.weight().qscheme() == torch.per_tensor_affine:
        weight = torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
    else:
        weight = torch._make_per_channel_quantized_tensor(values, scale, zero_point, 0)
    # torch.ao's Linear reads `weight`/`bias` when the state dict carries no version metadata.
    state[f"{key}weight"] = weight
    state[f"{key}bias"] = state.pop(f"{key}bias", None)


def _after_load_hook(root: nn.Module, _incompatible_keys) -> None:
    # Loading without version metadata leaves torch.ao's Linear at version None, whose forward
    # skips `reduce_range=True`; the layers were made by this torch, so they are current.
    for module in root.modules():
        if _is_torch_ao_dynamic_linear(module):
            module.version = type(module)._version


def make_storable(model: nn.Module) -> nn.Module:
    """Register the save/load hooks on `model` once; returns `model`."""
    if not getattr(model, _MARK, False):
        model.register_state_dict_post_hook(_save_hook)
        model.register_load_state_dict_pre_hook(_load_hook)
        model.register_load_state_dict_post_hook(_after_load_hook)
        setattr(model, _MARK, True)
    return model
