"""Tasks over in-memory arrays: the digits data set and a user's CSV/NPZ/JSONL file.

Metrics: "accuracy" (argmax of outputs vs integer labels), "mse" (outputs vs numeric targets)
and "fidelity" (mean cosine between a model's outputs and the original model's outputs; labels
not needed).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from wattwise.errors import ConfigError
from wattwise.tasks.base import (
    Forward,
    MetricSpec,
    ModelInputs,
    Quality,
    RequestFormat,
    Task,
    TrainingBatch,
    check_split,
    cycled,
    endless_batches,
    mean_ci95,
    proportion_ci95,
    sample_indices,
    split_indices,
)

METRICS = {
    "accuracy": MetricSpec("accuracy", higher_is_better=True),
    "mse": MetricSpec("mse", higher_is_better=False, unit="squared output units"),
    "fidelity": MetricSpec("fidelity", higher_is_better=True, unit="mean cosine"),
}
EVAL_BATCH = 256
DIGITS_MAX_INTENSITY = 16.0


class ArrayTask(Task):
    """Inputs `features` (N, ...) with optional `labels` (N, ...), split 60/20/20 with a seed."""

    def __init__(
        self,
        name: str,
        features: torch.Tensor,
        labels: torch.Tensor | None,
        metric: str,
        seed: int = 0,
        reference: Forward | None = None,
        client_units: RequestFormat | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
        if metric != "fidelity" and labels is None:
            raise ConfigError(f"metric {metric!r} needs labels; add a label column or use fidelity")
        self.name = name
        self.features = features
        self.labels = labels
        self.metric_name = metric
        self.metrics = (METRICS[metric],)
        self.output_kind = "logits" if metric == "accuracy" else "values"
        self.splits = split_indices(len(features), seed)
        self.reference = reference
        # How clients send inputs when not in the model's units (example None: taken from data).
        self.client_units = client_units
        self._reference_outputs: dict[str, torch.Tensor] = {}

    def split_size(self, split: str) -> int:
        check_split(split)
        return len(self.splits[split])

    def example_inputs(self, batch_size: int, split: str = "test") -> ModelInputs:
        check_split(split)
        return (cycled(self.features[self.splits[split]], batch_size),)

    def request_format(self) -> RequestFormat:
        """Clients send `client_units` (e.g. digit intensities 0–16), else the model's units."""
        sample = self.example_inputs(1)[0][0]
        units = self.client_units
        if units is None:
            return RequestFormat(sample)
        # Model input = client value × input_scale, so the example in client units is sample ÷ it.
        return RequestFormat(
            sample / units.input_scale, units.value_min, units.value_max, units.input_scale
        )

    def describe_inputs(self) -> str:
        dtype = str(self.features.dtype).removeprefix("torch.")
        return f"{dtype} tensor of shape (batch, {', '.join(map(str, self.features.shape[1:]))})"

    def outputs(self, forward: Forward, split: str) -> torch.Tensor:
        """Model outputs on a whole split, in evaluation batches, without gradients."""
        features = self.features[self.splits[split]]
        with torch.inference_mode():
            chunks = [
                forward(features[i : i + EVAL_BATCH]) for i in range(0, len(features), EVAL_BATCH)
            ]
        return torch.cat([c.float() for c in chunks])

    def evaluate(self, forward: Forward, split: str = "test") -> Quality:
        check_split(split)
        outputs = self.outputs(forward, split)
        count = len(outputs)
        if self.metric_name == "accuracy":
            correct = (outputs.argmax(dim=-1) == self.labels[self.splits[split]]).float()
            value = float(correct.mean())
            return Quality(
                {"accuracy": value}, split, count, {"accuracy": proportion_ci95(value, count)}
            )
        if self.metric_name == "mse":
            errors = ((outputs - self.labels[self.splits[split]].float()) ** 2).flatten(1).mean(1)
            return Quality({"mse": float(errors.mean())}, split, count, {"mse": mean_ci95(errors)})
        reference = self.reference_outputs(split)
        cosines = F.cosine_similarity(outputs.flatten(1), reference.flatten(1), dim=1)
        return Quality(
            {"fidelity": float(cosines.mean())}, split, count, {"fidelity": mean_ci95(cosines)}
        )

    def reference_outputs(self, split: str) -> torch.Tensor:
        """The original model's outputs on a split (computed once)."""
        if self.reference is None:
            raise ConfigError("fidelity needs the original model as reference; none was given")
        if split not in self._reference_outputs:
            self._reference_outputs[split] = self.outputs(self.reference, split)
        return self._reference_outputs[split]

    def training_batches(
        self, batch_size: int, seed: int = 0, sample: float | int | None = None
    ) -> Iterator[TrainingBatch]:
        train = self.splits["train"]
        subset = train[sample_indices(len(train), sample, seed)] if sample is not None else train
        for batch in endless_batches(len(self.features), batch_size, seed, subset):
            targets = self.labels[batch] if self.labels is not None else None
            yield TrainingBatch((self.features[batch],), targets)

    def supervised_loss(self, model: torch.nn.Module, batch: TrainingBatch) -> torch.Tensor:
        """Cross-entropy for accuracy tasks, MSE for regression; fidelity tasks have none."""
        outputs = model(*batch.inputs)
        if self.metric_name == "accuracy":
            return F.cross_entropy(outputs.float(), batch.targets)
        if self.metric_name == "mse":
            return F.mse_loss(outputs.float(), batch.targets.float())
        raise ConfigError("a fidelity task has no labels to train on; use distill instead")


def digits_task(seed: int = 0) -> ArrayTask:
    """scikit-learn's bundled 8×8 digits (1,797 images), scaled to [0, 1], split 60/20/20."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_INTENSITY
    labels = torch.tensor(data.target, dtype=torch.long)
    # Clients send intensities 0–16, the scale of `load_digits().images`; the model sees ÷ 16.
    units = RequestFormat(None, 0.0, DIGITS_MAX_INTENSITY, 1.0 / DIGITS_MAX_INTENSITY)
    return ArrayTask("digits", images, labels, "accuracy", seed=seed, client_units=units)
