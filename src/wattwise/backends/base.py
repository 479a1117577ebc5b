"""Backends: how a compressed model is exported, saved and run.

A backend registers with `@register_backend("name")` a class offering:
  export(module, context, deferred_steps, directory) -> Exported
  load(directory, manifest, source) -> nn.Module
Deferred steps are the ones the backend applies itself (ONNX Runtime quantization).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from wattwise.errors import ConfigError


@dataclass
class Exported:
    """What a backend wrote and the runnable module that reads it.

    Attributes:
        module: runs the saved variant exactly as `load` will rebuild it.
        files: names of the files written into the variant directory.
        notes: facts for the profile (e.g. "ONNX Runtime, graph optimizations: all").
        manifest: backend facts `load` needs (input names, opset, ...).
        resolved: id(step) → the step as resolved at export (a measured choice filled in), so
            the saved recipe replays that choice without measuring again.
    """

    module: nn.Module
    files: list[str]
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    resolved: dict[int, Any] = field(default_factory=dict)


class Backend(Protocol):
    """What every backend offers."""

    name: str
    # False when `load` never touches `source.module` (the variant file holds the whole model):
    # a server replica then skips building the source architecture (`load_variant`).
    needs_source_module: bool

    def export(self, module: nn.Module, context: Any, deferred: list, directory: Path) -> Exported:
        """Write the variant's model files into `directory`; return the runnable module."""

    def load(self, directory: Path, manifest: dict[str, Any], source: Any) -> nn.Module:
        """Rebuild the runnable module from a variant directory."""


BACKENDS: dict[str, Backend] = {}


def register_backend(name: str):
    """Class decorator registering a backend instance under `name`."""

    def decorate(cls):
        instance = cls()
        instance.name = name
        BACKENDS[name] = instance
        return cls

    return decorate


def check_backend_name(name: str) -> None:
    """Reject an unknown backend, listing the known ones."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: use one of {', '.join(sorted(BACKENDS))}")


def get_backend(name: str) -> Backend:
    """The registered backend called `name`."""
    check_backend_name(name)
    return BACKENDS[name]
