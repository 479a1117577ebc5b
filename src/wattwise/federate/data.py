"""The model and data of a federated run: a fresh seeded model, the held-out test split, and the
train split dealt to clients (IID or Dirichlet(α) non-IID), one .npz file per client:
digits-cnn and `module:factory` classifiers here, minilm's retrieval pairs in `retrieval.py`.

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
from wattwise.federate.retrieval import (
    TextPairs,
    minilm_encoder,
    recall_on,
    retrieval_task,
    write_pair_parts,
)
from wattwise.federate.settings import Partition
from wattwise.federate.training import LabelledArrays, LocalData, accuracy_on
from wattwise.paths import atomic_write_bytes
from wattwise.tasks.arrays import ArrayTask
from wattwise.tasks.base import Task

MIN_SAMPLES_PER_CLIENT = 8
DIRICHLET_TRIES = 200


@dataclass(frozen=True)
class Workload:
    """What is trained and how it is judged.

    `build()` returns a fresh model; `task` holds the splits; `score(model)` is the model's
    `metric` (a fraction) on the held-out test split; `write_parts(clients, partition, seed,
    directory)` deals the train split to one file per client; `pooled_train()` is the whole
    train split as one client's data (the centralised baseline).
    """

    model: str
    task: Task
    build: Callable[[], nn.Module]
    score: Callable[[nn.Module], float]
    write_parts: Callable[[int, Partition, int, Path], list[Path]]
    pooled_train: Callable[[], LocalData]
    metric: str = "accuracy"


def build_model(model: str) -> Callable[[], nn.Module]:
    """A constructor for "digits-cnn", "minilm" (pre-trained) or a user's "module:factory"."""
    from wattwise.models.factory import build_from_factory, is_factory_spec

    if model == "digits-cnn":
        from wattwise.models.digits import DigitsCNN

        return DigitsCNN
    if model == "minilm":
        return minilm_encoder
    if is_factory_spec(model):
        return lambda: build_from_factory(model).train()
    raise ConfigError(
        f"federate trains digits-cnn, minilm or a module:factory model, not {model!r}"
    )


def open_workload(model: str, data: Path | None = None, input_shape: str | None = None) -> Workload:
    """The model constructor and task for a run; a factory model needs its data file."""
    build = build_model(model)
    if model == "minilm":
        return _retrieval_workload(build)
    if model == "digits-cnn":
        from wattwise.tasks.arrays import digits_task

        return _array_workload(model, digits_task(seed=0), build)
    if data is None:
        raise ConfigError(f"{model} needs --data FILE (.npz/.csv/.jsonl with inputs and labels)")
    from wattwise.models.factory import parse_input_spec
    from wattwise.tasks.user_data import load_user_task

    shape = parse_input_spec(input_shape)[0][0] if input_shape else None
    task = load_user_task(Path(data), "accuracy", sample_shape=shape)
    return _array_workload(model, task, build)


def _array_workload(model: str, task: ArrayTask, build: Callable[[], nn.Module]) -> Workload:
    def pooled_train() -> LocalData:
        train = task.splits["train"]
        return LabelledArrays(task.features[train], task.labels[train])

    return Workload(
        model,
        task,
        build,
        score=lambda module: accuracy_on(module, task, "test"),
        write_parts=lambda *args: write_client_parts(task, *args),
        pooled_train=pooled_train,
    )


def _retrieval_workload(build: Callable[[], nn.Module]) -> Workload:
    task = retrieval_task(seed=0)

    def write_parts(clients: int, partition: Partition, seed: int, directory: Path):
        if partition.kind != "iid":
            raise ConfigError(
                "minilm's passage/query pairs have no classes to skew: use --partition iid"
            )
        pairs = np.zeros(len(task.corpus["train"]), dtype=np.int64)
        positions = partition_indices(pairs, clients, partition, seed)
        return write_pair_parts(task, positions, directory)

    return Workload(
        "minilm",
        task,
        build,
        score=lambda module: recall_on(module, task, "test"),
        write_parts=write_parts,
        pooled_train=lambda: TextPairs.pooled(task),
        metric="recall@10",
    )


def open_local_data(model: str, path: Path) -> LocalData:
    """A client's own data file, read the way its model trains on it."""
    if model == "minilm":
        return TextPairs.read(path)
    return LabelledArrays(*read_client_part(path))


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
