"""What a user model takes as input: dtypes, the range of random integer inputs, token ids.

A model whose first layer is an `nn.Embedding` takes integer ids; every other model takes
floats unless the user says otherwise (`--input-dtype`, or `--input-shape 32:int64`). Ids are
checked against the embedding's rows here, so a bad id is a one-line error and not an
IndexError inside `torch.embedding`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wattwise.errors import ConfigError, DataError

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
}
# Random integer inputs of a model without an input embedding: small non-negative values.
DEFAULT_INTEGER_RANGE = (0, 100)


def dtype_named(name: str, flag: str = "--input-dtype") -> torch.dtype:
    """'int64' → torch.int64; ConfigError naming the choices otherwise."""
    if name not in DTYPES:
        raise ConfigError(f"unknown {flag} {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def input_embedding(module: nn.Module) -> tuple[str, nn.Embedding] | None:
    """The model's input embedding: its first layer with weights, when that is an Embedding.

    "First" is registration order (the order `__init__` assigns layers), which is the data
    order for the models this is meant for (Embedding → GRU/Transformer → Linear). Parameters
    held by the model object itself (a positional table, a class token) are not a layer.
    """
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "", module
    for name, layer in module.named_modules():
        if not name or next(layer.parameters(recurse=False), None) is None:
            continue
        if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)):
            return name, layer
        return None
    return None


@dataclass(frozen=True)
class InputRange:
    """Random inputs are drawn in [low, high): integers with `torch.randint`, floats uniformly."""

    low: float
    high: float


def parse_positive_numbers(
    text: str, kind: type[int] | type[float], not_numbers: str, not_positive: str
) -> tuple:
    """'1,32' → (1, 32): the comma-separated `kind` numbers in `text`, each > 0 (blanks skipped).

    Raises ConfigError(not_numbers) when a part is not a `kind`, ConfigError(not_positive) when
    one is ≤ 0; each message names the flag and the fix.
    """
    try:
        values = tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ConfigError(not_numbers) from error
    if any(value <= 0 for value in values):
        raise ConfigError(not_positive)
    return values


def parse_input_range(text: str | None) -> InputRange | None:
    """'0,1000' → InputRange(0, 1000); None stays None."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        low, high = (float(p) for p in parts)
    except ValueError as error:
        raise ConfigError(
            f"bad --input-range {text!r}: give 'low,high' like 0,1000 (high excluded)"
        ) from error
    if not low < high:
        raise ConfigError(f"bad --input-range {text!r}: low must be below high, e.g. 0,1000")
    return InputRange(low, high)


def random_input_range(
    module: nn.Module, dtype: torch.dtype, text: str | None
) -> tuple[float, float] | None:
    """The [low, high) random inputs of `dtype` are drawn from, checked against an input
    embedding; None means floats from N(0, 1).

    Integer defaults: [0, num_embeddings) when the model starts with an Embedding, else [0, 100).
    """
    chosen = parse_input_range(text)
    if dtype.is_floating_point:
        return (chosen.low, chosen.high) if chosen else None
    if chosen is not None and (chosen.low != int(chosen.low) or chosen.high != int(chosen.high)):
        raise ConfigError(f"--input-range {text!r} must be whole numbers for {dtype} inputs")
    found = input_embedding(module)
    if found is None:
        return (chosen.low, chosen.high) if chosen else DEFAULT_INTEGER_RANGE
    name, embedding = found
    rows = embedding.num_embeddings
    if chosen is None:
        return (0, rows)
    if chosen.low < 0 or chosen.high > rows:
        raise ConfigError(
            f"--input-range {text} reaches outside the model's input embedding {name!r} of "
            f"{rows} rows; give a range within 0,{rows}"
        )
    return (chosen.low, chosen.high)


def resolve_input_dtype(module: nn.Module, declared: torch.dtype | None) -> torch.dtype:
    """The dtype a model's inputs take: the declared one, else int64 when it starts with an
    Embedding, else float32."""
    if declared is not None:
        return declared
    return torch.int64 if input_embedding(module) is not None else torch.float32


def check_token_ids(module: nn.Module, features: torch.Tensor, where: str) -> None:
    """DataError when integer inputs fall outside the model's input embedding rows."""
    found = input_embedding(module)
    if found is None or features.is_floating_point() or features.numel() == 0:
        return
    name, embedding = found
    low, high = int(features.min()), int(features.max())
    if low < 0 or high >= embedding.num_embeddings:
        raise DataError(
            f"{where}: token ids span {low}..{high} but the model's input embedding {name!r} has "
            f"{embedding.num_embeddings} rows (ids 0..{embedding.num_embeddings - 1}); fix the "
            "ids or the vocabulary size"
        )
