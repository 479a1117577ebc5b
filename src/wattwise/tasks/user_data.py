"""A user's own data for a task: CSV, NPZ or JSONL of inputs and labels, with a named metric.

- NPZ: arrays `inputs` (or `x`/`X`) and `labels` (or `y`).
- CSV: numeric columns; the label column is `label` (or the one named); the rest are inputs.
- JSONL: one object per line with `input` (a number list, nested for images) and `label`.
Inputs are reshaped to the model's per-sample shape when one is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wattwise.errors import DataError
from wattwise.tasks.arrays import ArrayTask
from wattwise.tasks.base import Forward
from wattwise.tasks.data_checks import (
    check_finite,
    check_labels,
    check_splits,
    jsonl_records,
    numeric_inputs,
    shaped_samples,
)
from wattwise.tasks.dtypes import input_tensor


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = next((data[k] for k in ("inputs", "x", "X") if k in data), None)
            labels = next((data[k] for k in ("labels", "y", "Y") if k in data), None)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, AttributeError) as error:
        raise DataError(
            f"{path} is not a readable .npz ({type(error).__name__}); save it with "
            "np.savez(path, inputs=..., labels=...), without object arrays"
        ) from error
    if inputs is None:
        raise DataError(
            f"{path} has no 'inputs' (or 'x') array; save one with np.savez(inputs=..., labels=...)"
        )
    return inputs, labels


def _read_csv(path: Path, label_column: str) -> tuple[np.ndarray, np.ndarray | None]:
    import csv

    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{path} is not a readable CSV text file ({error}); save it as UTF-8 CSV"
        ) from error
    if not rows:
        raise DataError(f"{path} has no data rows; add a header line and numeric rows")
    columns = [c for c in rows[0] if c != label_column]
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        for column in rows[0]:
            try:
                float(row[column])
            except (ValueError, TypeError) as error:
                raise DataError(
                    f"{path} line {number}, column {column!r} holds {row[column]!r}, not a number; "
                    "inputs and labels must be numbers"
                ) from error
    inputs = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float64)
    check_finite(path, inputs, "the inputs", "data row", columns)
    labels = np.array([float(r[label_column]) for r in rows]) if label_column in rows[0] else None
    return inputs, labels


def _read_jsonl(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    records = jsonl_records(path, "input")
    inputs = [record["input"] for record in records]
    labels = [record["label"] for record in records if "label" in record]
    if labels and len(labels) != len(inputs):
        raise DataError(
            f"{path}: some lines have a 'label' and some do not; label every line or none"
        )
    try:
        array = np.asarray(inputs, dtype=np.float64)
        label_array = np.asarray(labels, dtype=np.float64) if labels else None
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{path}: 'input' values are not numbers of one shape on every line ({error}); "
            "fix the lines"
        ) from error
    check_finite(path, array, "the inputs", "record")
    return array, label_array


def load_user_task(
    path: Path,
    metric: str,
    sample_shape: tuple[int, ...] | None = None,
    reference: Forward | None = None,
    label_column: str = "label",
    input_dtype: torch.dtype | None = None,
) -> ArrayTask:
    """An ArrayTask over a user's file, scored with `metric` (accuracy, mse or fidelity).

    Inputs become `input_dtype` (None: float32); integer ids stay integers (see tasks.dtypes).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} not found; check the path")
    suffix = path.suffix.lower()
    readers = {
        ".npz": lambda: _read_npz(path),
        ".csv": lambda: _read_csv(path, label_column),
        ".jsonl": lambda: _read_jsonl(path),
    }
    if suffix not in readers:
        raise DataError(f"unsupported data file {path.name}: use .csv, .npz or .jsonl")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty; give samples with inputs and labels")
    inputs, labels = readers[suffix]()
    inputs = numeric_inputs(path, inputs)
    check_finite(path, inputs, "the inputs", "sample")
    if labels is not None:
        check_labels(path, labels, len(inputs), metric, "sample")
    if len(inputs) < 10:
        raise DataError(
            f"{path} has {len(inputs)} samples; give at least 10 (it is split 60/20/20)"
        )
    features = input_tensor(inputs, input_dtype, str(path))
    if sample_shape:
        features = shaped_samples(path, features, sample_shape, "fix --input-shape or the data")
    label_tensor = None
    if labels is not None:
        label_tensor = (
            torch.as_tensor(labels).long()
            if metric == "accuracy"
            else torch.as_tensor(labels).float()
        )
    task = ArrayTask(path.stem, features, label_tensor, metric, reference=reference)
    check_splits(path, {name: len(indices) for name, indices in task.splits.items()})
    task.source_path = path
    return task


def random_input_task(
    reference: Forward,
    sample_shapes: list[tuple[tuple[int, ...], torch.dtype]],
    samples: int = 512,
    value_range: tuple[float, float] | None = None,
) -> ArrayTask:
    """Seeded random inputs scored by fidelity to the original model, for models without data.

    Floats are N(0, 1), or uniform in `value_range` [low, high); integers are uniform in
    `value_range` (default [0, 100)). Only single-input models; quality on random inputs says
    how closely a variant copies the original, not how good it is on real data.
    """
    if len(sample_shapes) != 1:
        raise DataError(
            "models with several inputs need --data to profile quality; pass a data file"
        )
    shape, dtype = sample_shapes[0]
    generator = torch.Generator().manual_seed(0)
    size = (samples, *shape)
    if dtype.is_floating_point and value_range is None:
        features = torch.randn(size, generator=generator).to(dtype)
    elif dtype.is_floating_point:
        low, high = value_range
        features = (low + (high - low) * torch.rand(size, generator=generator)).to(dtype)
    else:
        low, high = (int(v) for v in (value_range or (0, 100)))
        features = torch.randint(low, high, size, generator=generator, dtype=dtype)
    task = ArrayTask("random-inputs", features, None, "fidelity", reference=reference)
    task.name = "random-inputs (fidelity to the original on seeded random inputs)"
    task.has_training_data = False
    return task
