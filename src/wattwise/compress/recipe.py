"""A recipe: ordered steps plus a backend, read from YAML and validated.

steps:
  - quantize: {method: int8_dynamic, granularity: per_channel}
backend: onnxruntime
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wattwise.backends import check_backend_name
from wattwise.compress.steps import Step, parse_step
from wattwise.config_files import read_yaml
from wattwise.errors import ConfigError


class BackendSpec(BaseModel):
    """Where the variant runs: "eager", "torch_compile" or "onnxruntime", with its options.

    `threads`: intra-op threads at run time (default: torch's); `optimization`: ONNX Runtime
    graph optimization level (none, basic, extended, all); `compile_mode`: torch.compile mode;
    `exporter`: the ONNX exporter, "dynamo" (torch.export-based) or "torchscript"
    (`torch.onnx.export(..., dynamo=False)`, measured 13% faster for MiniLM on AVX2);
    `micro_batch` / `micro_batch_tokens` / `streams` (ONNX Runtime only): the execution plan,
    each call's batch cut into micro-batches of that many samples (or, for token ids, that many
    tokens) run on `streams` sessions side by side (`models.onnx_model.OnnxModule`);
    `disabled_optimizers` (ONNX Runtime only): graph transformers the session must not apply,
    e.g. `[SkipLayerNormFusion]` (its CPU kernel ran 1.35x slower than LayerNormalization + Add
    on fused int8 MiniLM, docs/benchmarks.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "eager"
    threads: int | None = None
    optimization: str = "all"
    compile_mode: str = "default"
    opset: int = 18
    exporter: Literal["dynamo", "torchscript"] = "dynamo"
    micro_batch: int | None = Field(default=None, ge=1)
    micro_batch_tokens: int | None = Field(default=None, ge=1)
    streams: int = Field(default=1, ge=1)
    disabled_optimizers: tuple[str, ...] = ()

    @property
    def libraries(self) -> tuple[str, ...]:
        """The libraries this backend needs (the report shows them per candidate); "wattwise"
        when the variant runs through wattwise's own execution plan (no library offers it)."""
        if self.name != "onnxruntime":
            return ("torch",)
        exporter = ("onnxscript",) if self.exporter == "dynamo" else ()
        plan = ("wattwise",) if self.has_execution_plan else ()
        return ("torch", *exporter, "onnxruntime", *plan)

    @property
    def has_execution_plan(self) -> bool:
        """Whether calls are cut into micro-batches (and run on several streams)."""
        return self.micro_batch is not None or self.micro_batch_tokens is not None

    def describe_plan(self) -> str:
        """'2 streams × micro-batches of 256 tokens', or '' without an execution plan."""
        if not self.has_execution_plan:
            return ""
        streams = f"{self.streams} streams × " if self.streams > 1 else ""
        sizes = [f"{self.micro_batch_tokens} tokens"] if self.micro_batch_tokens else []
        sizes += [f"{self.micro_batch} samples"] if self.micro_batch else []
        return f"{streams}micro-batches of {' or '.join(sizes)}"


@dataclass
class Recipe:
    """Ordered steps and a backend."""

    steps: list[Step] = field(default_factory=list)
    backend: BackendSpec = field(default_factory=BackendSpec)

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """Validate a parsed YAML mapping; unknown keys, steps or fields raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError("a recipe is a mapping with 'steps' (a list) and optional 'backend'")
        unknown = set(data) - {"steps", "backend"}
        if unknown:
            raise ConfigError(
                f"unknown recipe field(s) {', '.join(sorted(unknown))}: allowed are steps, backend"
            )
        steps_data = data.get("steps") or []
        if not isinstance(steps_data, list):
            raise ConfigError("recipe 'steps' must be a list of one-key mappings")
        steps = [parse_step(entry) for entry in steps_data]
        check_no_conflicting_repeats(steps)
        backend_data = data.get("backend", "eager")
        if isinstance(backend_data, str):
            backend_data = {"name": backend_data}
        try:
            backend = BackendSpec(**backend_data)
        except (ValidationError, TypeError) as error:
            raise ConfigError(
                f"bad backend {backend_data!r}: fields are {', '.join(BackendSpec.model_fields)}"
            ) from error
        check_backend_name(backend.name)
        ort_only = backend.has_execution_plan or backend.streams > 1 or backend.disabled_optimizers
        if ort_only and backend.name != "onnxruntime":
            raise ConfigError(
                f"backend {backend.name!r}: micro_batch, micro_batch_tokens, streams and "
                "disabled_optimizers are onnxruntime options; drop them or use backend onnxruntime"
            )
        if backend.streams > 1 and not backend.has_execution_plan:
            raise ConfigError(
                f"streams: {backend.streams} needs micro_batch or micro_batch_tokens (the batch "
                "is cut into micro-batches for the streams); add e.g. micro_batch: 2"
            )
        recipe = cls(steps, backend)
        recipe.check_order()
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> Recipe:
        """Read and validate a recipe file."""
        data = read_yaml(path, "recipe file")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The YAML-shaped mapping (round-trips through from_dict)."""
        return {
            "steps": [step.to_yaml_dict() for step in self.steps],
            "backend": self.backend.model_dump(exclude_defaults=True) or {"name": "eager"},
        }

    def describe(self) -> str:
        """One line: 'prune structured → quantize int8_dynamic @ onnxruntime'."""
        steps = " → ".join(step.describe() for step in self.steps) or "no steps"
        details = [
            "torchscript export" if self.backend.exporter == "torchscript" else "",
            self.backend.describe_plan(),
            "without " + ", ".join(self.backend.disabled_optimizers)
            if self.backend.disabled_optimizers
            else "",
        ]
        details = ", ".join(d for d in details if d)
        return f"{steps} @ {self.backend.name}" + (f" ({details})" if details else "")

    @property
    def libraries(self) -> tuple[str, ...]:
        """Every library the recipe needs: its backend's and its steps', in first-use order."""
        names = list(self.backend.libraries)
        for step in self.steps:
            names.extend(step.libraries_for(self.backend.name))
        return tuple(dict.fromkeys(names))

    def with_resolved(self, resolved: dict[int, Step]) -> Recipe:
        """This recipe with steps replaced by what they resolved to at export (keyed by id):
        a step that measured a choice (selective int8's layer list) saves that choice."""
        return Recipe([resolved.get(id(step), step) for step in self.steps], self.backend)

    def check_order(self) -> None:
        """Steps applied at export by the backend must come after every model-level step."""
        seen_deferred = False
        for step in self.steps:
            deferred = step_is_deferred(step, self.backend.name)
            if seen_deferred and not deferred:
                raise ConfigError(
                    f"step {step.describe()!r} comes after a step the {self.backend.name} backend "
                    "applies at export; move it before that quantize step"
                )
            seen_deferred = seen_deferred or deferred


def check_no_conflicting_repeats(steps: list[Step]) -> None:
    """The same step named twice with different settings is ambiguous: ConfigError naming both.

    "The same step" is the same kind and method (prune unstructured twice), and any two
    quantize or cast steps (a model has one number format).
    """
    seen: dict[tuple, dict] = {}
    for step in steps:
        ((kind, settings),) = step.to_yaml_dict().items()
        key = (kind,) if kind in ("quantize", "cast") else (kind, settings.get("method"))
        if key in seen and seen[key] != settings:
            raise ConfigError(
                f"recipe names step {kind!r} twice with conflicting settings ({seen[key]} and "
                f"{settings}); give it once with the settings you want"
            )
        seen.setdefault(key, settings)


def step_is_deferred(step: Step, backend: str) -> bool:
    """True when the backend, not PyTorch, applies this step (e.g. ONNX Runtime quantization)."""
    return step.deferred_for(backend)
