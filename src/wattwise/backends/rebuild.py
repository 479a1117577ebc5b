"""Architecture records replayed by `load_variant`, so a variant loads without the code or the
original object that compressed it.

A step that changes the architecture (prunes channels, drops layers, swaps module types, casts
dtypes) returns records like {"op": "resize_linear", ...}. At load time the source model is
built fresh, each record's rebuilder is applied in order, then the saved weights are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from wattwise.errors import VariantIntegrityError

Rebuilder = Callable[[nn.Module, dict[str, Any]], nn.Module]
REBUILDERS: dict[str, Rebuilder] = {}


def register_rebuilder(op: str):
    """Function decorator: `@register_rebuilder("cast")` for fn(module, record) -> module."""

    def decorate(function: Rebuilder) -> Rebuilder:
        REBUILDERS[op] = function
        return function

    return decorate


def replay(module: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    """Apply every record in order."""
    for record in records:
        op = record.get("op")
        if op not in REBUILDERS:
            raise VariantIntegrityError(
                f"variant needs rebuild step {op!r}, which this wattwise does not know; "
                "upgrade wattwise or recreate the variant"
            )
        module = REBUILDERS[op](module, record)
    return module


def get_submodule_parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The parent module of `name` and the child's attribute name."""
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child
