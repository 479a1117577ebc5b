"""A large input file for `wattwise batch`: texts or numeric samples, in a fixed order.

- JSONL: one object per line, `text` (text models) or `input` (a number list, nested for
  images); an optional `id`.
- CSV: a `text` column (text models), or numeric columns (`id` and `label` are not inputs).
- NPZ: an `inputs` (or `x`) array and optionally `ids`.

Text is processed shortest first (length-sorted by token count), so each batch pads to
about its own length: less padding, less wasted compute. The order is part of the run's state.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wattwise.errors import DataError
from wattwise.models.registry import LoadedModel
from wattwise.tasks.data_checks import jsonl_records, shaped_samples


@dataclass
class BatchInputs:
    """Inputs in file order, and the order in which they are processed.

    Attributes:
        texts: the texts (text models), else None.
        arrays: the samples (N, *sample_shape) as float32 (other models), else None.
        ids: ids from the file, else positions as strings.
        order: processing order (positions into the file order).
        file_sha256: the input file's hash, so a resumed run checks it reads the same data.
    """

    texts: list[str] | None
    arrays: np.ndarray | None
    ids: list[str]
    order: list[int]
    file_sha256: str

    def __len__(self) -> int:
        return len(self.ids)


def is_text_model(loaded: LoadedModel) -> bool:
    """Whether the model takes texts (its task tokenizes)."""
    return hasattr(loaded.task, "tokenize") and "tokenizer" in loaded.extra


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_jsonl(path: Path, field: str) -> tuple[list, list[str] | None]:
    records = jsonl_records(path, field)
    values = [record[field] for record in records]
    ids = [str(record["id"]) for record in records if "id" in record]
    return values, (ids if len(ids) == len(values) else None)


def _read_csv(path: Path, text: bool) -> tuple[list, list[str] | None]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"{path} has no data rows; add a header line and rows")
    ids = [row["id"] for row in rows] if "id" in rows[0] else None
    if text:
        if "text" not in rows[0]:
            raise DataError(f"{path} has no 'text' column; a text model needs one")
        return [row["text"] for row in rows], ids
    columns = [c for c in rows[0] if c not in ("id", "label")]
    try:
        return [[float(row[c]) for c in columns] for row in rows], ids
    except (TypeError, ValueError) as error:
        raise DataError(f"{path} has a non-numeric input cell ({error}); fix it") from error


def _read_npz(path: Path) -> tuple[np.ndarray, list[str] | None]:
    with np.load(path, allow_pickle=False) as data:
        inputs = next((data[k] for k in ("inputs", "x", "X") if k in data), None)
        ids = [str(i) for i in data["ids"]] if "ids" in data else None
    if inputs is None:
        raise DataError(f"{path} has no 'inputs' array; save one with np.savez(inputs=...)")
    return inputs, ids


def read_inputs(path: str | Path, loaded: LoadedModel) -> BatchInputs:
    """Read `path` for `loaded` and fix the processing order (length-sorted for text)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input file {path} not found; check the path")
    suffix = path.suffix.lower()
    text = is_text_model(loaded)
    if suffix == ".jsonl":
        values, ids = _read_jsonl(path, "text" if text else "input")
    elif suffix == ".csv":
        values, ids = _read_csv(path, text)
    elif suffix == ".npz" and not text:
        values, ids = _read_npz(path)
    else:
        kinds = ".jsonl or .csv" if text else ".jsonl, .csv or .npz"
        raise DataError(f"unsupported input file {path.name} for this model: use {kinds}")
    if len(values) == 0:
        raise DataError(f"{path} holds no inputs")
    ids = ids or [str(i) for i in range(len(values))]
    if text:
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{path}: every 'text' must be a string")
        lengths = [len(ids_) for ids_ in loaded.task.tokenizer(list(values))["input_ids"]]
        order = sorted(range(len(values)), key=lambda i: (lengths[i], i))
        return BatchInputs(list(values), None, ids, order, _sha256(path))
    arrays = _shaped(np.asarray(values, dtype=np.float32), loaded, path)
    return BatchInputs(None, arrays, ids, list(range(len(arrays))), _sha256(path))


def _shaped(arrays: np.ndarray, loaded: LoadedModel, path: Path) -> np.ndarray:
    example = loaded.task.example_inputs(1)
    if len(example) != 1:
        raise DataError("batch supports models with one tensor input (or text models)")
    sample_shape = tuple(example[0].shape[1:])
    shaped = shaped_samples(path, arrays, sample_shape, "fix the data")
    return torch.from_numpy(shaped).to(example[0].dtype).numpy()


def model_inputs(loaded: LoadedModel, inputs: BatchInputs, positions: list[int]):
    """The model's positional tensors for the inputs at `positions` (file order)."""
    if inputs.texts is not None:
        return loaded.task.tokenize([inputs.texts[i] for i in positions])
    return (torch.from_numpy(inputs.arrays[positions]),)
