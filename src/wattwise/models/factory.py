"""User models given as `module:factory` (a callable that returns an nn.Module)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch
from torch import nn

from wattwise.errors import ModelLoadError
from wattwise.models.inputs import dtype_named, parse_positive_numbers


def is_factory_spec(spec: str) -> bool:
    """True for 'package.module:callable' (and not a Windows drive or URL)."""
    module, _, attr = spec.partition(":")
    return bool(module and attr) and "/" not in spec and attr.isidentifier()


def build_from_factory(spec: str) -> nn.Module:
    """Import `module`, call `factory()`, and check it returned an nn.Module.

    The current directory is importable, so `mymodels:build` works from a project root.
    """
    module_name, _, attr = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ModelLoadError(
            f"cannot import module {module_name!r} for factory {spec!r} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); check it is on PYTHONPATH"
        ) from error
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ModelLoadError(
            f"{module_name!r} has no callable {attr!r}; name a function that returns an nn.Module"
        )
    try:
        model = factory()
    except Exception as error:
        raise ModelLoadError(
            f"factory {spec!r} raised {type(error).__name__}: {error}; fix the factory"
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module; "
            "return the model object itself"
        )
    return model.eval()


def parse_input_spec(
    spec: str, default_dtype: torch.dtype | None = torch.float32
) -> list[tuple[tuple[int, ...], torch.dtype | None]]:
    """'3,32,32' or '3,32,32:float32;16:int64' → per-input (shape without batch, dtype).

    An input without ':dtype' gets `default_dtype` (None leaves the choice to the caller)."""
    inputs = []
    for part in spec.split(";"):
        shape_text, _, dtype_name = part.strip().partition(":")
        shape = parse_positive_numbers(
            shape_text,
            int,
            f"bad input shape {part!r}: give per-sample sizes like '3,32,32' or '16:int64'",
            f"bad input shape {part!r}: every size must be positive",
        )
        if not dtype_name:
            inputs.append((shape, default_dtype))
            continue
        inputs.append((shape, dtype_named(dtype_name, "input dtype")))
    return inputs
