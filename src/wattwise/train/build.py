"""What `wattwise train` trains: the model, its batches and its loss, from the config.

- `digits-cnn` with `from_scratch: true`: a freshly initialised DigitsCNN (seeded), cross-entropy.
- `digits-cnn` otherwise, or a `module:factory` model with `data:`: fine-tune what `load_model`
  returns with the task's supervised loss.
- `minilm` (or any Hugging Face sentence encoder directory): fine-tuning without labels with the
  unsupervised SimCSE objective (Gao et al., EMNLP 2021): the same sentences are encoded twice,
  dropout makes the two views differ, and an InfoNCE loss pulls each sentence to its own second
  view and away from the other sentences of the batch (temperature 0.05, the paper's value).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wattwise.errors import ConfigError
from wattwise.fit.loop import TrainConfig, fit
from wattwise.tasks.base import Task, TrainingBatch
from wattwise.train.config import TrainSettings

SIMCSE_TEMPERATURE = 0.05


@dataclass
class TrainingSetup:
    """A model to train, its task, its loss and a seeded batch factory."""

    model: nn.Module
    task: Task
    loss_fn: Callable[[nn.Module, TrainingBatch], torch.Tensor]
    make_batches: Callable[[int], Iterator[TrainingBatch]]
    description: str

    def train_from(
        self,
        start_step: int,
        model: nn.Module,
        batches: Iterator[TrainingBatch],
        config: TrainConfig,
        **fit_options: Any,
    ) -> None:
        """Train `model` (this setup's, or it wrapped for DDP) with this setup's loss from
        `start_step` to `config.steps`; nothing when a restored run got there already.

        `fit_options` go to `fit` as they are (the restored optimizer, the step hook, ...).
        """
        if start_step < config.steps:
            fit(
                model,
                batches,
                self.loss_fn,
                config,
                description=self.description,
                start_step=start_step,
                **fit_options,
            )


def simcse_loss(model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of each sentence are positives, the batch negatives."""
    first = F.normalize(model(*batch.inputs).float(), dim=-1)
    second = F.normalize(model(*batch.inputs).float(), dim=-1)
    logits = first @ second.T / SIMCSE_TEMPERATURE
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def build_setup(settings: TrainSettings) -> TrainingSetup:
    """Model, task, loss and batches for a config (the model is seeded when built fresh)."""
    from wattwise.compress.variant import open_model
    from wattwise.models.registry import ModelOptions

    if settings.model == "digits-cnn" and settings.from_scratch:
        from wattwise.models.digits import DigitsCNN
        from wattwise.tasks.arrays import digits_task

        task = digits_task()
        torch.manual_seed(settings.seed)  # the initial weights are part of what a seed fixes
        size = settings.digits_cnn
        model = DigitsCNN(tuple(size.channels), size.hidden)
        loss_fn = task.supervised_loss
        description = f"digits-cnn from scratch (channels {size.channels}, hidden {size.hidden})"
    else:
        if settings.from_scratch:
            raise ConfigError(
                f"from_scratch applies to digits-cnn only; {settings.model!r} is fine-tuned from "
                "its weights (drop from_scratch)"
            )
        options = ModelOptions(data=settings.data, metric=settings.metric)
        loaded = open_model(settings.model, options)
        task, model = loaded.task, loaded.module
        if hasattr(task, "supervised_loss") and getattr(task, "labels", None) is not None:
            loss_fn = task.supervised_loss
            description = f"{settings.model}: supervised fine-tuning ({task.metrics[0].name})"
        elif task.output_kind == "embeddings":
            loss_fn = simcse_loss
            description = f"{settings.model}: unsupervised SimCSE fine-tuning"
        else:
            raise ConfigError(
                f"{settings.model!r} has no labels to train on; give data: with a label column"
            )
    model = model.to(settings.device)

    def make_batches(seed: int) -> Iterator[TrainingBatch]:
        for batch in task.training_batches(settings.batch_size, seed=seed, sample=settings.sample):
            yield _to_device(batch, settings.device)

    return TrainingSetup(model, task, loss_fn, make_batches, description)


def _to_device(batch: TrainingBatch, device: str) -> TrainingBatch:
    if device == "cpu":
        return batch
    targets = batch.targets.to(device) if batch.targets is not None else None
    return TrainingBatch(tuple(t.to(device) for t in batch.inputs), targets)
