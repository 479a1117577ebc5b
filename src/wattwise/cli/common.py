"""Helpers shared by the commands: JSON output, batch-size parsing, model options."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

import typer

from wattwise.errors import ConfigError
from wattwise.models.registry import ModelOptions

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
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


def quiet_for_json(as_json: bool) -> None:
    """Silence progress output so stdout holds only JSON."""
    if as_json:
        os.environ["WATTWISE_QUIET"] = "1"


def print_json(value: Any) -> None:
    """Dump dataclasses/dicts as indented JSON on stdout."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """'1,32' → (1, 32); rejects non-integers and values ≤ 0."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(
            f"bad --batch-sizes {text!r}: give positive integers like 1,32"
        ) from error
    if not sizes or any(size <= 0 for size in sizes):
        raise ConfigError(f"bad --batch-sizes {text!r}: every batch size must be ≥1, e.g. 1,32")
    return sizes


def model_options(
    weights,
    input_shape,
    data,
    metric,
    input_dtype=None,
    input_range=None,
    trust_code: bool = False,
) -> ModelOptions:
    """ModelOptions from the shared CLI flags."""
    return ModelOptions(
        weights=weights,
        input_shape=input_shape,
        data=data,
        metric=metric,
        input_dtype=input_dtype,
        input_range=input_range,
        trust_code=trust_code,
    )
