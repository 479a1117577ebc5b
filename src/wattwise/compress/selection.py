"""Choosing the layers a step touches (torchao's `filter_fn(module, fqn)` idea)."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatchcase

from torch import nn

from wattwise.compress.steps import LayerSelection

FilterFn = Callable[[nn.Module, str], bool]


def layer_filter(
    selection: LayerSelection, default_types: tuple[type, ...] = (nn.Linear,)
) -> FilterFn:
    """A `filter_fn(module, fqn)` for a selection; without `module_types`, `default_types`."""

    def accept(module: nn.Module, name: str) -> bool:
        if selection.module_types:
            if type(module).__name__ not in selection.module_types:
                return False
        elif not isinstance(module, default_types):
            return False
        if selection.include and not any(fnmatchcase(name, p) for p in selection.include):
            return False
        return not any(fnmatchcase(name, p) for p in selection.exclude)

    return accept


def selected_modules(
    model: nn.Module, selection: LayerSelection, default_types: tuple[type, ...] = (nn.Linear,)
) -> list[tuple[str, nn.Module]]:
    """(name, module) pairs the selection accepts."""
    accept = layer_filter(selection, default_types)
    return [(name, m) for name, m in model.named_modules() if name and accept(m, name)]
