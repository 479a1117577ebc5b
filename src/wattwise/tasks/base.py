"""A task knows its data, how to feed a model, and how to score it.

Models take positional tensors (`ModelInputs`) and return one tensor (logits or embeddings).
Splits are fixed and seeded: "train" (for distillation, QAT, fine-tuning), "val" (used by the
search) and "test" (held out: profiles and the final check of a chosen variant).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

ModelInputs = tuple[torch.Tensor, ...]
Forward = Callable[..., torch.Tensor]
SPLITS = ("train", "val", "test")


def module_device(module: Callable[..., Any]) -> torch.device:
    """The device of `module`'s first parameter or buffer; the CPU for modules with neither
    (ONNX Runtime sessions, plain callables), which take CPU tensors."""
    for tensors in ("parameters", "buffers"):
        first = next(iter(getattr(module, tensors, lambda: iter(()))()), None)
        if first is not None:
            return first.device
    return torch.device("cpu")


def forward_on_its_device(module: Callable[..., Any]) -> Forward:
    """`module` itself when it runs on the CPU; otherwise a forward that moves tensor inputs to
    the module's device and its output back to the CPU (tasks keep their data on the CPU)."""
    device = module_device(module)
    if device.type == "cpu":
        return module

    def forward(*args: Any, **kwargs: Any) -> torch.Tensor:
        moved = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
        named = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        output = module(*moved, **named)
        return output.cpu() if isinstance(output, torch.Tensor) else output

    return forward


@dataclass(frozen=True)
class MetricSpec:
    """A quality metric: its name, direction and unit."""

    name: str
    higher_is_better: bool = True
    unit: str = "fraction"


@dataclass
class Quality:
    """Scores of a model on one split.

    Attributes:
        metrics: metric name → value (fractions in [0, 1] unless the metric's unit says otherwise).
        split: which split was scored.
        samples: how many samples were scored.
        ci95: metric name → half-width of a 95% confidence interval, where one is computed.
    """

    metrics: dict[str, float]
    split: str
    samples: int
    ci95: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestFormat:
    """How a client sends one input of this task to a server, as JSON data.

    Attributes:
        example: one valid input in client units: a string (text tasks) or a tensor shaped
            like one sample of `example_inputs` (array tasks).
        value_min, value_max: accepted range in client units (None: any finite number).
        input_scale: the server multiplies client values by this to get model inputs.
    """

    example: Any
    value_min: float | None = None
    value_max: float | None = None
    input_scale: float = 1.0


@dataclass
class TrainingBatch:
    """Inputs for a model and, for labelled tasks, the targets."""

    inputs: ModelInputs
    targets: torch.Tensor | None


def proportion_ci95(value: float, samples: int) -> float:
    """Half-width of the normal-approximation 95% interval of a proportion."""
    if samples <= 0:
        return float("nan")
    return 1.96 * math.sqrt(max(value * (1 - value), 0.0) / samples)


def mean_ci95(values: torch.Tensor) -> float:
    """Half-width of the 95% interval of a mean (normal approximation)."""
    count = values.numel()
    if count < 2:
        return float("nan")
    return float(1.96 * values.float().std() / math.sqrt(count))


class Task(ABC):
    """Data, input feeding and scoring for one model family."""

    name: str
    metrics: tuple[MetricSpec, ...]
    output_kind: str  # "logits", "embeddings" or "values"
    # False for tasks made of seeded random inputs: nothing real to distill or fine-tune on.
    has_training_data: bool = True

    @property
    def primary_metric(self) -> MetricSpec:
        """The metric listed first: the one a budget names by default."""
        return self.metrics[0]

    @abstractmethod
    def example_inputs(self, batch_size: int, split: str = "test") -> ModelInputs:
        """A batch of real inputs of the given size (cycled from the split), for profiling."""

    @abstractmethod
    def evaluate(self, forward: Forward, split: str = "test") -> Quality:
        """Score `forward` on a split."""

    @abstractmethod
    def split_size(self, split: str) -> int:
        """Number of samples in a split."""

    @abstractmethod
    def training_batches(
        self, batch_size: int, seed: int = 0, sample: float | int | None = None
    ) -> Iterator[TrainingBatch]:
        """Endless shuffled batches of the train split (optionally a seeded sample of it)."""

    def describe_inputs(self) -> str:
        """One line: what the model's inputs are."""
        return "tensors"

    def corpus_batches(self, batch_size: int, split: str = "val") -> list[ModelInputs] | None:
        """The split's real inputs in batches as a server would see them (text: sorted by
        length, each batch padded to its longest), or None when the task has no such corpus."""
        return None

    def request_format(self) -> RequestFormat:
        """How a client sends one input (example, range, scale); default: the model's own units."""
        return RequestFormat(self.example_inputs(1)[0][0])


def sample_indices(total: int, sample: float | int | None, seed: int) -> torch.Tensor:
    """Seeded subset of range(total): a fraction in (0, 1], a count, or everything."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=generator)
    if sample is None:
        return order
    count = round(total * sample) if isinstance(sample, float) else int(sample)
    return order[: max(1, min(total, count))]


def endless_batches(total: int, batch_size: int, seed: int, subset: torch.Tensor | None = None):
    """Yield index batches forever, reshuffled each epoch with a seeded generator."""
    indices = subset if subset is not None else torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = indices[torch.randperm(len(indices), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) == batch_size or len(order) < batch_size:
                yield batch


def cycled(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` rows of `tensor`, repeating it when it is shorter."""
    repeats = math.ceil(count / tensor.shape[0])
    return tensor.repeat((repeats,) + (1,) * (tensor.dim() - 1))[:count]


def split_indices(total: int, seed: int, fractions=(0.6, 0.2, 0.2)) -> dict[str, torch.Tensor]:
    """Fixed, seeded train/val/test index split."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    n_train = int(total * fractions[0])
    n_val = int(total * fractions[1])
    return {
        "train": order[:n_train],
        "val": order[n_train : n_train + n_val],
        "test": order[n_train + n_val :],
    }


def check_split(split: str) -> None:
    """Reject an unknown split name."""
    if split not in SPLITS:
        from wattwise.errors import ConfigError

        raise ConfigError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


class ResumableBatches:
    """An endless batch iterator whose place is (seed, position): checkpointable and exact.

    `make_batches(seed)` must return a seeded, deterministic iterator (every task's
    `training_batches` is). `position` counts the batches handed out so far; a new
    `ResumableBatches(make_batches, seed, position)` skips that many and then yields exactly what
    the original would have yielded next. Skipping replays the seeded order, so restoring costs
    one pass over the skipped batches' indexing (cheap for array tasks; tokenization for text).

    Example:
        batches = ResumableBatches(lambda s: task.training_batches(32, seed=s), seed=0)
        next(batches); saved = batches.position        # 1
        again = ResumableBatches(lambda s: task.training_batches(32, seed=s), 0, saved)
    """

    def __init__(
        self, make_batches: Callable[[int], Iterator[TrainingBatch]], seed: int, position: int = 0
    ) -> None:
        self.seed = seed
        self.position = 0
        self._batches = make_batches(seed)
        for _ in range(position):
            next(self._batches)
            self.position += 1

    def __iter__(self) -> ResumableBatches:
        return self

    def __next__(self) -> TrainingBatch:
        batch = next(self._batches)
        self.position += 1
        return batch
