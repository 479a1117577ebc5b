"""Helpers shared by the commands: JSON output, batch-size parsing, shared option groups."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

import typer

from wattwise.errors import ConfigError
from wattwise.models.inputs import parse_positive_numbers
from wattwise.models.registry import ModelOptions


def quiet_for_json(as_json: bool) -> bool:
    """Silence progress output so stdout holds only JSON (the --json flag's callback)."""
    if as_json:
        os.environ["WATTWISE_QUIET"] = "1"
    return as_json


JSON_OPTION = typer.Option(
    False, "--json", help="Print machine-readable JSON on stdout.", callback=quiet_for_json
)
WEIGHTS_OPTION = typer.Option(
    None, "--weights", help="safetensors weights for a module:factory model."
)
INPUT_SHAPE_OPTION = typer.Option(
    None,
    "--input-shape",
    help="Per-sample input shape for factory/ONNX models, e.g. '3,32,32' or '16:int64'.",
)
INPUT_DTYPE_OPTION = typer.Option(
    None,
    "--input-dtype",
    help="Input dtype of a factory model: float32, float16, bfloat16, int64 or int32 "
    "(default: int64 when its first layer is an nn.Embedding, else float32).",
)
INPUT_RANGE_OPTION = typer.Option(
    None,
    "--input-range",
    help="'low,high' for random inputs (high excluded), e.g. 0,1000 for token ids "
    "(default: the input Embedding's rows, else 0,100; floats N(0,1)).",
)
DATA_OPTION = typer.Option(
    None, "--data", help="Your data: .csv, .npz or .jsonl of inputs and labels."
)
METRIC_OPTION = typer.Option(None, "--metric", help="Metric for --data: accuracy, mse or fidelity.")
TRUST_CODE_OPTION = typer.Option(
    False,
    "--trust-code",
    help="Allow a variant built from a module:factory to import and run that code.",
)


def print_json(value: Any) -> None:
    """Dump dataclasses/dicts as indented JSON on stdout."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,32' → (1, 32); rejects non-integers and values ≤ 0."""
    not_positive = f"bad --batch-sizes {text!r}: every batch size must be ≥1, e.g. 1,32"
    sizes = parse_positive_numbers(
        text, int, f"bad --batch-sizes {text!r}: give positive integers like 1,32", not_positive
    )
    if not sizes:
        raise ConfigError(not_positive)
    return sizes


@dataclasses.dataclass(frozen=True)
class OptionGroup:
    """Flags several commands share, declared once.

    A command takes the group as one parameter, e.g. `options: ModelOptions = MODEL_FLAGS`;
    `with_option_groups` shows typer the group's flags in that place and hands the command
    `gather(**values)`, one object built from the flags' values.
    `flags` maps each flag's parameter name to its type and its `typer.Option`.
    """

    flags: tuple[tuple[str, Any, Any], ...]
    gather: Callable[..., Any] = dict

    def only(self, *names: str) -> OptionGroup:
        """The same group with just the flags named (in the group's order)."""
        return dataclasses.replace(self, flags=tuple(f for f in self.flags if f[0] in names))

    def without(self, *names: str) -> OptionGroup:
        """The same group less the flags named."""
        return dataclasses.replace(self, flags=tuple(f for f in self.flags if f[0] not in names))

    def parameters(self) -> list[inspect.Parameter]:
        """The flags as keyword parameters, as typer reads them from a signature."""
        return [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
            for name, kind, option in self.flags
        ]


def settings_flags(settings: type, *names: str) -> tuple[tuple[str, Any, Any], ...]:
    """The fields `names` of a settings dataclass as flags, for an `OptionGroup`.

    Each field declares its flag's help in its metadata (see `serve.settings.serve_flag`); its
    type and default become the flag's, so neither is written twice. `replicas` becomes
    `--replicas`; a bool field becomes the pair `--name/--no-name`.
    """
    hints = typing.get_type_hints(settings)
    fields = {field.name: field for field in dataclasses.fields(settings)}
    flags = []
    for name in names:
        field = fields[name]
        kind = next(k for k in (*typing.get_args(hints[name]), hints[name]) if k is not type(None))
        flag = "--" + name.replace("_", "-")
        declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        default = field.default if field.metadata["show_default"] else None
        flags.append((name, kind, typer.Option(default, declaration, help=field.metadata["help"])))
    return tuple(flags)


def with_option_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with each `OptionGroup` default shown to typer as the group's flags.

    `app.command()` applies it to every command; one without a group comes back unchanged.
    """
    signature = inspect.signature(command)
    if not any(isinstance(p.default, OptionGroup) for p in signature.parameters.values()):
        return command
    signature = inspect.signature(command, eval_str=True)
    groups: dict[str, OptionGroup] = {}
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if isinstance(parameter.default, OptionGroup):
            groups[parameter.name] = parameter.default
            parameters += parameter.default.parameters()
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def run(**values: Any) -> Any:
        for name, group in groups.items():
            values[name] = group.gather(**{flag: values.pop(flag) for flag, _, _ in group.flags})
        return command(**values)

    run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters}
    return run


# --weights … --trust-code, handed to the command as one `ModelOptions`.
MODEL_FLAGS = OptionGroup(
    flags=(
        ("weights", str, WEIGHTS_OPTION),
        ("input_shape", str, INPUT_SHAPE_OPTION),
        ("input_dtype", str, INPUT_DTYPE_OPTION),
        ("input_range", str, INPUT_RANGE_OPTION),
        ("data", str, DATA_OPTION),
        ("metric", str, METRIC_OPTION),
        ("trust_code", bool, TRUST_CODE_OPTION),
    ),
    gather=ModelOptions,
)
