"""The one training loop: distillation, QAT, fine-tuning and `wattwise train` all use it.

A loss function maps (model, batch) to a scalar; the loop owns the optimizer, mixed precision,
gradient accumulation, seeding and per-step logging. Callbacks (`on_step`) let checkpointing and
replication hook in without a second loop.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from wattwise.fit.memory import enable_gradient_checkpointing
from wattwise.fit.precision import PRECISIONS, autocast_context
from wattwise.tasks.base import TrainingBatch

LossFn = Callable[[nn.Module, TrainingBatch], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
        steps: optimizer steps to run.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        precision: "fp32", "bf16" (autocast; CPU or CUDA) or "fp16" (CUDA, with GradScaler).
        grad_accumulation: micro-batches per optimizer step.
        max_grad_norm: gradient clipping norm (0 disables).
        warmup_steps: linear learning-rate warm-up, then linear decay to 10%.
        seed: seeds torch, numpy and random before training.
        gradient_checkpointing: recompute activations in backward instead of keeping them
            (less activation memory, roughly one extra forward of compute); see
            `wattwise.fit.memory`.
    """

    steps: int
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    precision: str = "fp32"
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    seed: int = 0
    gradient_checkpointing: bool = False


@dataclass
class StepLog:
    """One optimizer step: index, loss, wall seconds and, when measured, its energy.

    `energy_j` is the step's energy in joules from `energy_source` ("nvml", "rapl" or
    "estimate"); both stay None when `fit` was given no energy source.
    """

    step: int
    loss: float
    seconds: float
    energy_j: float | None = None
    energy_source: str | None = None


@dataclass
class TrainResult:
    """What a run did: steps, losses, time."""

    steps: int
    final_loss: float
    seconds: float
    log: list[StepLog] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for a reproducible run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the parameters that require gradients."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    """Linear warm-up then linear decay to 10% of the learning rate."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        remaining = max(1, config.steps - config.warmup_steps)
        return max(0.1, 1.0 - 0.9 * (step - config.warmup_steps) / remaining)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    model: nn.Module,
    batches: Iterator[TrainingBatch],
    loss_fn: LossFn,
    config: TrainConfig,
    *,
    description: str = "training",
    show_progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    start_step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    scaler: torch.amp.GradScaler | None = None,
    energy_source=None,
    on_step_log: Callable[[StepLog], None] | None = None,
) -> TrainResult:
    """Train `model` in place for `config.steps` optimizer steps; returns the loss log.

    Resuming passes `start_step` with the restored `optimizer`, `scheduler` (and `scaler` for
    fp16 on CUDA) and a batch iterator positioned where the run stopped; seeding is then left to
    the caller, who restores the saved RNG states. `energy_source` (any
    `wattwise.measure.energy.EnergySource`) adds each step's joules to its `StepLog`;
    `on_step_log` sees every `StepLog` (checkpointing and logging hook in there).

    Example:
        fit(model, task.training_batches(32), cross_entropy_loss, TrainConfig(steps=200))
    """
    from wattwise.progress import progress_bar

    if config.precision not in PRECISIONS:
        from wattwise.errors import ConfigError

        raise ConfigError(f"unknown precision {config.precision!r}: use one of {PRECISIONS}")
    if start_step == 0:
        seed_everything(config.seed)
    device_type = next((p.device.type for p in model.parameters()), "cpu")
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = optimizer or make_optimizer(model, config)
    scheduler = scheduler or make_scheduler(optimizer, config)
    use_scaler = config.precision == "fp16" and device_type == "cuda"
    if scaler is None and use_scaler:
        scaler = torch.amp.GradScaler("cuda")
    elif not use_scaler:
        scaler = None
    model.train()
    log: list[StepLog] = []
    started = time.perf_counter()
    loss_value = float("nan")
    with progress_bar(description, total=config.steps - start_step, enabled=show_progress) as bar:
        for step in range(start_step, config.steps):
            step_start = time.perf_counter()
            energy_token = energy_source.start() if energy_source is not None else None
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(config.grad_accumulation):
                batch = next(batches)
                with autocast_context(config.precision, device_type):
                    loss = loss_fn(model, batch) / config.grad_accumulation
                (scaler.scale(loss) if scaler else loss).backward()
                total += float(loss.detach())
            if scaler:
                scaler.unscale_(optimizer)
            if config.max_grad_norm:
                trainable = [p for p in model.parameters() if p.requires_grad]
                torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            loss_value = total
            entry = StepLog(step + 1, total, time.perf_counter() - step_start)
            if energy_source is not None:
                reading = energy_source.stop(energy_token)
                entry.energy_j, entry.energy_source = reading.energy_j, reading.source
            log.append(entry)
            if on_step_log:
                on_step_log(entry)
            if on_step:
                on_step(step + 1, total)
            bar.advance(f"loss {total:.4f}")
    model.eval()
    return TrainResult(len(log), loss_value, time.perf_counter() - started, log)
