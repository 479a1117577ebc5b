"""Recipe steps: small frozen configs, applied through a registry (as torchao's `quantize_`).

A step class declares its YAML key (`kind`, e.g. "quantize") and `method` (e.g.
"int8_dynamic"); `@register_step` maps (kind, method) to the class and the class to its
handler. Adding a method adds a config and a handler, never a branch elsewhere.

Every step can choose which layers it touches (see `LayerSelection`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from wattwise.errors import ConfigError


class LayerSelection(BaseModel):
    """Which layers a step touches, by module type and fully-qualified-name glob.

    `include`: name globs to touch (default: all); `exclude`: name globs to leave alone (e.g.
    the first and last layer); `module_types`: class names (e.g. ["Linear", "Conv2d"]).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    module_types: tuple[str, ...] = ()


class Step(BaseModel):
    """Base of every recipe step. Subclasses set `kind` and `method` and add their fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[str] = ""
    method: str = ""
    layers: LayerSelection = Field(default_factory=LayerSelection)

    def deferred_for(self, backend_name: str) -> bool:
        """True when `backend_name` applies this step at export (ONNX Runtime quantization)."""
        return False

    # The libraries the step needs besides the backend's (shown per candidate in the report).
    libraries: ClassVar[tuple[str, ...]] = ("torch",)

    def libraries_for(self, backend_name: str) -> tuple[str, ...]:
        """The libraries this step needs on `backend_name` (default: the class's `libraries`)."""
        return self.libraries

    def to_yaml_dict(self) -> dict[str, Any]:
        """The `{kind: {fields}}` mapping a user writes in YAML."""
        fields = self.model_dump(exclude_defaults=True, mode="json")
        fields["method"] = self.method
        return {self.kind: {k: v for k, v in fields.items() if v not in ("", None)}}

    def describe(self) -> str:
        """Short human label, e.g. 'quantize int8_dynamic (per_channel)'."""
        extras = {k: v for k, v in self.model_dump(exclude_defaults=True).items() if k != "method"}
        inner = ", ".join(f"{k}={v}" for k, v in extras.items())
        label = f"{self.kind} {self.method}".strip()
        return f"{label} ({inner})" if inner else label


@dataclass
class StepOutcome:
    """What a handler did: the new model and records for the variant.

    Attributes:
        module: the model after the step (may be the same object).
        rebuild: architecture records `load_variant` replays to rebuild the module before it
            loads the saved weights (see `wattwise.backends.rebuild`).
        notes: facts the profile must show (sparsity, "dense kernels gain no speed", ...).
        metrics: numbers the step measured (training loss, sparsity, ...).
    """

    module: nn.Module
    rebuild: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


# (kind, method) → step class; step class → handler(context, module, step) → StepOutcome.
Handler = Callable[[Any, nn.Module, Any], StepOutcome]
STEP_TYPES: dict[tuple[str, str], type[Step]] = {}
HANDLERS: dict[type[Step], Handler] = {}


def register_step(handler: Handler):
    """Class decorator: `@register_step(apply_int8_dynamic)` on a Step subclass.

    The handler is `handler(context, module, step) -> StepOutcome`; it may change `module` in
    place (it is already a copy of the source) or return a new one.
    """

    def decorate(cls: type[Step]) -> type[Step]:
        method = cls.model_fields["method"].default
        STEP_TYPES[(cls.kind, method)] = cls
        HANDLERS[cls] = handler
        return cls

    return decorate


class OnnxRuntimeStep(Step):
    """A step the onnxruntime backend applies to the exported graph (deferred there).

    On any other backend its handler, `refuse_outside_onnxruntime`, raises the class's
    `outside_onnxruntime` (formatted with `step` and `backend`) as a ConfigError naming the fix.
    """

    outside_onnxruntime: ClassVar[str] = ""

    def deferred_for(self, backend_name: str) -> bool:
        """ONNX Runtime applies the step to the exported graph."""
        return backend_name == "onnxruntime"


def refuse_outside_onnxruntime(context, module: nn.Module, step: OnnxRuntimeStep) -> StepOutcome:
    """The handler of an OnnxRuntimeStep: reached only on another backend, where it is an error."""
    raise ConfigError(step.outside_onnxruntime.format(step=step, backend=context.backend.name))


def step_kinds() -> dict[str, list[str]]:
    """kind → the methods registered for it."""
    kinds: dict[str, list[str]] = {}
    for kind, method in sorted(STEP_TYPES):
        kinds.setdefault(kind, []).append(method)
    return kinds


def parse_step(entry: Any) -> Step:
    """`{"quantize": {"method": "int8_dynamic", ...}}` → the registered Step instance."""
    from pydantic import ValidationError

    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(
            f"each step is a one-key mapping like {{quantize: {{method: int8_dynamic}}}}; got {entry!r}"
        )
    ((kind, fields),) = entry.items()
    fields = dict(fields or {})
    kinds = step_kinds()
    if kind not in kinds:
        raise ConfigError(f"unknown step {kind!r}: allowed steps are {', '.join(sorted(kinds))}")
    method = fields.pop("method", "")
    if (kind, method) not in STEP_TYPES:
        allowed = ", ".join(m for m in kinds[kind] if m) or "(none: omit method)"
        raise ConfigError(
            f"unknown method {method!r} for step {kind!r}: allowed methods are {allowed}"
        )
    cls = STEP_TYPES[(kind, method)]
    try:
        return cls(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(step)"
        allowed = ", ".join(k for k in cls.model_fields if k != "method")
        raise ConfigError(
            f"step {kind} {method}: field {where!r}: {first['msg']} (fields: {allowed})"
        ) from error


# Choosing the layers a step touches (torchao's `filter_fn(module, fqn)` idea).
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
