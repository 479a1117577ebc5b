"""The model and data of a federated run: a fresh seeded model, the held-out test split, and the
train split dealt to clients (IID or Dirichlet(α) non-IID), one .npz file per client.

Each client process reads only its own file; the server reads only the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wattwise.errors import ConfigError, DataError
from wattwise.federate.settings import Partition
from wattwise.paths import atomic_write_bytes
from wattwise.tasks.arrays import ArrayTask

MIN_SAMPLES_PER_CLIENT = 8
DIRICHLET_TRIES = 200


@dataclass(frozen=True)
class Workload:
    """What is trained: `build()` returns a fresh model; `task` holds the splits."""

    model: str
    task: ArrayTask
    build: Callable[[], nn.Module]


def build_model(model: str) -> Callable[[], nn.Module]:
    """A constructor for "digits-cnn" or a user's "module:factory"."""
    from wattwise.models.factory import build_from_factory, is_factory_spec

    if model == "digits-cnn":
        from wattwise.models.digits import DigitsCNN

        return DigitsCNN
    if is_factory_spec(model):
        return lambda: build_from_factory(model).train()
    raise ConfigError(
        f"federate trains digits-cnn or a module:factory model, not {model!r}; "
        "minilm fine-tuning is not federated yet"
    )


def open_workload(model: str, data: Path | None = None, input_shape: str | None = None) -> Workload:
    """The model constructor and task for a run; a factory model needs its data file."""
    build = build_model(model)
    if model == "digits-cnn":
        from wattwise.tasks.arrays import digits_task

        return Workload(model, digits_task(seed=0), build)
    if data is None:
        raise ConfigError(f"{model} needs --data FILE (.npz/.csv/.jsonl with inputs and labels)")
    from wattwise.models.factory import parse_input_spec
    from wattwise.tasks.user_data import load_user_task

    shape = parse_input_spec(input_shape)[0][0] if input_shape else None
    return Workload(model, load_user_task(Path(data), "accuracy", sample_shape=shape), build)


def fresh_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """The same initial weights for the same seed, in any process."""
    torch.manual_seed(seed)
    return build()


def partition_indices(
    labels: np.ndarray, clients: int, partition: Partition, seed: int
) -> list[np.ndarray]:
    """Positions into `labels` for each client.

    "iid": a seeded shuffle cut in equal parts. "dirichlet": per class, shares drawn from
    Dir(α·1) over clients (Hsu et al., 2019); redrawn until every client holds at least
    MIN_SAMPLES_PER_CLIENT samples.
    """
    rng = np.random.default_rng(seed)
    total = len(labels)
    if total < clients * MIN_SAMPLES_PER_CLIENT:
        raise DataError(
            f"{total} training samples cannot give {clients} clients "
            f"{MIN_SAMPLES_PER_CLIENT} each; use fewer clients or more data"
        )
    if partition.kind == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(total), clients)]
    classes = np.unique(labels)
    for _ in range(DIRICHLET_TRIES):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for label in classes:
            members = rng.permutation(np.flatnonzero(labels == label))
            shares = rng.dirichlet(np.full(clients, partition.alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_SAMPLES_PER_CLIENT:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise DataError(
        f"dirichlet:{partition.alpha} left a client with under {MIN_SAMPLES_PER_CLIENT} samples "
        f"in {DIRICHLET_TRIES} draws; use a larger alpha or fewer clients"
    )


def write_client_parts(
    task: ArrayTask, clients: int, partition: Partition, seed: int, directory: Path
) -> list[Path]:
    """Deal the task's train split to clients; one `client-<i>.npz` (inputs, labels) each."""
    train = task.splits["train"].numpy()
    labels = task.labels[train].numpy()
    paths = []
    for client, positions in enumerate(partition_indices(labels, clients, partition, seed)):
        rows = train[positions]
        buffer = _npz_bytes(task.features[rows].numpy(), task.labels[rows].numpy())
        path = Path(directory) / f"client-{client}.npz"
        atomic_write_bytes(path, buffer)
        paths.append(path)
    return paths


def _npz_bytes(inputs: np.ndarray, labels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs, labels=labels)
    return buffer.getvalue()


def read_client_part(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A client's own data file (.npz with inputs and labels) as tensors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"client data {path} not found; give the file this client trains on")
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs, labels = data["inputs"], data["labels"]
    except (KeyError, ValueError, OSError) as error:
        raise DataError(
            f"{path} is not an .npz with 'inputs' and 'labels' arrays ({error}); rewrite it"
        ) from error
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise DataError(f"{path}: {len(inputs)} inputs but {len(labels)} labels; fix the file")
    return torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(labels).long()


def label_histogram(path: Path, classes: int) -> list[int]:
    """Samples per class in a client's file (for the report; counts only, never the samples)."""
    _, labels = read_client_part(path)
    return np.bincount(labels.numpy(), minlength=classes).tolist()
