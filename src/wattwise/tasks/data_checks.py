"""Checks on a user's data before any number is computed from it.

A NaN in one input makes a model's output NaN, and argmax of NaN is class 0: the profile then
reports an accuracy of 0.08 instead of an error. So values, labels and splits are checked here
and each problem is one DataError naming the place (column or row/line) and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from wattwise.errors import DataError

Samples = TypeVar("Samples")  # a NumPy array or a torch tensor: both reshape the same way


def numeric_inputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    """`inputs` as float32, or DataError when they hold text, objects or complex numbers."""
    array = np.asarray(inputs)
    if array.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: inputs have dtype {array.dtype}, not numbers; store ints or floats"
        )
    if array.ndim == 0 or array.size == 0:
        raise DataError(f"{path} holds no input values; add samples")
    return array.astype(np.float32)


def where(index: int, row_name: str, columns: Sequence[str] | None, column: int | None) -> str:
    """'row 3, column "pixel_2"' or 'line 3' for an error message (1-based rows)."""
    place = f"{row_name} {index + 1}"
    if columns is not None and column is not None and column < len(columns):
        place += f', column "{columns[column]}"'
    elif column is not None:
        place += f", value {column}"
    return place


def check_finite(
    path: Path,
    values: np.ndarray,
    what: str,
    row_name: str = "row",
    columns: Sequence[str] | None = None,
) -> None:
    """DataError naming the first NaN/inf in `values` (per-sample rows)."""
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return
    row, column = (int(i) for i in np.argwhere(bad)[0])
    value = flat[row, column]
    count = int(bad.sum())
    raise DataError(
        f"{path}: {what} has {count} NaN/infinite value(s), first {value} at "
        f"{where(row, row_name, columns, column if flat.shape[1] > 1 or columns else None)}; "
        "fill or drop those samples"
    )


def check_labels(
    path: Path, labels: np.ndarray, samples: int, metric: str, row_name: str = "row"
) -> None:
    """Labels: one per sample, finite; for accuracy, whole numbers ≥ 0 and at least two classes."""
    if len(labels) != samples:
        raise DataError(
            f"{path}: {len(labels)} labels for {samples} inputs; give one label per sample"
        )
    if np.asarray(labels).dtype.kind not in "biuf":
        raise DataError(f"{path}: labels have dtype {np.asarray(labels).dtype}, not numbers")
    check_finite(path, np.asarray(labels).reshape(samples, -1), "the label column", row_name)
    if metric != "accuracy":
        return
    values = np.asarray(labels, dtype=np.float64).reshape(-1)
    whole = values == np.round(values)
    if not whole.all() or (values < 0).any():
        row = int(np.argmax(~whole | (values < 0)))
        raise DataError(
            f"{path}: accuracy needs class indices 0, 1, 2, ... but {row_name} {row + 1} has "
            f"label {values[row]}; use --metric mse for numeric targets"
        )
    if len(np.unique(values)) < 2:
        raise DataError(
            f"{path}: every label is {values[0]:g}, a single class: accuracy would say nothing; "
            "give samples of at least two classes"
        )


def check_label_range(path: Path, labels: np.ndarray, classes: int) -> None:
    """Accuracy labels must index the model's `classes` outputs."""
    values = np.asarray(labels).reshape(-1)
    high = int(values.max())
    if high >= classes:
        row = int(np.argmax(values >= classes))
        raise DataError(
            f"{path}: label {high} (first at sample {row + 1}) is out of range: the model has "
            f"{classes} outputs, so labels must be 0..{classes - 1}; fix the labels or the model"
        )


def check_splits(path: Path, split_sizes: dict[str, int]) -> None:
    """Every split (train/val/test) must hold at least one sample."""
    empty = [name for name, size in split_sizes.items() if size == 0]
    if empty:
        raise DataError(
            f"{path}: the {', '.join(empty)} split(s) would be empty; give more samples "
            "(the data is split 60/20/20)"
        )


def jsonl_records(path: Path, field: str) -> list[dict[str, Any]]:
    """The objects of a JSONL file (one a line, blank lines skipped), each holding `field`;
    DataError naming the first line that is not such an object."""
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or field not in record:
            article = "an" if field[0] in "aeiou" else "a"
            raise DataError(
                f"{path} line {number} is not an object with {article} {field!r} field; "
                "fix that line"
            )
        records.append(record)
    return records


def shaped_samples(
    path: Path, samples: Samples, sample_shape: tuple[int, ...], fix: str
) -> Samples:
    """`samples` reshaped to (N, *sample_shape), the model's per-sample input shape, or a
    DataError naming both shapes and `fix` (what the user should change)."""
    try:
        return samples.reshape((len(samples), *sample_shape))
    except (ValueError, RuntimeError) as error:  # NumPy raises ValueError, torch RuntimeError
        given = tuple(samples.shape[1:])
        raise DataError(
            f"{path}: inputs of {given} values per sample do not fit the model's input shape "
            f"{sample_shape}; {fix}"
        ) from error
