"""Record how a step changed a model's shapes, so `load_variant` rebuilds the smaller model.

Structured pruning rewrites weights in place (a Linear of 1536 outputs becomes one of 1075) and
the attributes that describe them (`out_features`, `num_attention_heads`, ...). The "resize"
record keeps both: the new shape of every parameter and buffer that changed, and every integer
or tuple attribute that changed. Replaying it on a fresh copy of the source architecture gives
empty tensors of the right shapes, which the saved weights then fill: no pruning library and
no original object are needed at load time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wattwise.backends.rebuild import get_submodule_parent, register_rebuilder

Architecture = dict[str, Any]


def _plain_attributes(module: nn.Module) -> dict[str, Any]:
    """The int, float and int-tuple attributes a module's forward may read (not bools)."""
    plain: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key.startswith("_") or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            plain[key] = value
        elif isinstance(value, tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            plain[key] = list(value)
    return plain


def architecture_of(model: nn.Module) -> Architecture:
    """Tensor shapes and plain attributes of every submodule, for `resize_record`."""
    return {
        "tensors": {name: list(t.shape) for name, t in model.state_dict().items()},
        "attributes": {name: _plain_attributes(m) for name, m in model.named_modules()},
    }


def resize_record(before: Architecture, model: nn.Module) -> dict[str, Any] | None:
    """The "resize" rebuild record from `before` to `model`'s current shapes (None: unchanged)."""
    after = architecture_of(model)
    tensors = {
        name: shape
        for name, shape in after["tensors"].items()
        if before["tensors"].get(name) != shape
    }
    attributes: dict[str, dict[str, Any]] = {}
    for name, values in after["attributes"].items():
        old = before["attributes"].get(name, {})
        changed = {k: v for k, v in values.items() if old.get(k) != v}
        if changed:
            attributes[name] = changed
    if not tensors and not attributes:
        return None
    return {"op": "resize", "tensors": tensors, "attributes": attributes}


@register_rebuilder("resize")
def rebuild_resized(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Give every recorded tensor its new shape (values come from the saved weights)."""
    for name, shape in record["tensors"].items():
        parent, attribute = get_submodule_parent(model, name)
        old = getattr(parent, attribute)
        empty = torch.empty(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(parent, attribute, nn.Parameter(empty, requires_grad=old.requires_grad))
        else:
            parent._buffers[attribute] = empty
    for name, values in record["attributes"].items():
        module = model.get_submodule(name) if name else model
        for key, value in values.items():
            current = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(current, tuple) else value)
    return model
