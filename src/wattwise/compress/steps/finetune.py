"""`finetune`: train some parameters (others frozen by pattern) on a seeded sample of the data.

Labelled tasks train on their own loss (cross-entropy for digits); tasks without labels (text
encoders) train towards the model before the recipe, as distillation does, since their only
target is the original's embeddings. The metric is then scored on the val split and reported
with its 95% confidence interval: a fine-tune on a sample is judged with its uncertainty.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.compress.training import (
    default_distill_loss,
    default_learning_rate,
    distillation_loss,
    mixed_precision,
    require_training_data,
    supervised_loss,
)
from wattwise.errors import ConfigError
from wattwise.fit.loop import TrainConfig, fit


class Finetune(Step):
    """`finetune: {steps: 200, freeze: "encoder.layer.[0-3].*", sample: 0.2}`.

    `freeze`: parameter-name pattern(s) to keep fixed, each a regular expression searched in
    the name or a glob matched against the name or any dotted suffix of it; `sample`: a fraction
    in (0, 1] or a count of training samples (seeded); `learning_rate` (default 1e-3 for
    classifiers, 1e-4 for encoders) and `batch_size` for AdamW; `precision` auto picks bf16
    where it is native.
    """

    kind = "finetune"
    method: Literal[""] = ""
    steps: int = Field(200, ge=1, le=100_000)
    freeze: str | tuple[str, ...] = ()
    sample: float | int | None = None
    learning_rate: float | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @field_validator("sample")
    @classmethod
    def _sample_in_range(cls, value: float | int | None) -> float | int | None:
        if value is None:
            return value
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError(f"sample {value} must be a fraction in (0, 1] or a count ≥ 1")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"sample {value} must be a fraction in (0, 1] or a count ≥ 1")
        return value


def pattern_matches(pattern: str, name: str) -> bool:
    """A regular expression found in `name`, or a glob matching it or a dotted suffix of it."""
    try:
        if re.search(pattern, name):
            return True
    except re.error:
        pass  # not a regular expression ("*.bias"): try it as a glob only
    parts = name.split(".")
    return any(fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def freeze_parameters(module: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Stop gradients for every parameter a pattern matches; return their names.

    Raises ConfigError when a pattern matches nothing or when nothing would be left to train.
    """
    names = [name for name, _ in module.named_parameters()]
    frozen: set[str] = set()
    for pattern in patterns:
        matched = {name for name in names if pattern_matches(pattern, name)}
        if not matched:
            example = names[0] if names else "(none)"
            raise ConfigError(
                f"finetune freeze pattern {pattern!r} matches no parameter; parameter names look "
                f"like {example!r}"
            )
        frozen |= matched
    if len(frozen) == len(names):
        raise ConfigError("finetune freeze patterns match every parameter; leave some to train")
    for name, parameter in module.named_parameters():
        parameter.requires_grad_(name not in frozen)
    return sorted(frozen)


def apply_finetune(context, module: nn.Module, step: Finetune) -> StepOutcome:
    """Fine-tune the unfrozen parameters, then score the metric with its 95% interval."""
    require_training_data(context.task, "finetune")
    patterns = (step.freeze,) if isinstance(step.freeze, str) else tuple(step.freeze)
    student = module.to(context.device)
    frozen = freeze_parameters(student, patterns)
    loss_fn = supervised_loss(context.task, context.device)
    objective = "task labels"
    if loss_fn is None:
        loss_name = default_distill_loss(context.task, "auto")
        loss_fn = distillation_loss(
            context.teacher.to(context.device), loss_name, 2.0, context.device
        )
        objective = f"the original model's outputs ({loss_name} loss; the task has no labels)"
    precision = mixed_precision(context.device, step.precision)
    result = fit(
        student,
        context.task.training_batches(step.batch_size, seed=context.seed, sample=step.sample),
        loss_fn,
        TrainConfig(
            steps=step.steps,
            learning_rate=step.learning_rate or default_learning_rate(context.task),
            precision=precision,
            seed=context.seed,
        ),
        description="finetune",
        show_progress=context.show_progress,
    )
    context.teacher.cpu()
    student = student.cpu().eval()
    for parameter in student.parameters():
        parameter.requires_grad_(True)  # later steps (distill) train everything again
    quality = context.task.evaluate(student, "val")
    trainable = sum(p.numel() for n, p in student.named_parameters() if n not in frozen)
    sample = f"{step.sample} of the training data" if step.sample is not None else "all data"
    scored = ", ".join(
        f"{name} {value:.4f} ± {quality.ci95.get(name, float('nan')):.4f}"
        for name, value in quality.metrics.items()
    )
    notes = [
        f"fine-tuned {result.steps} steps on {sample} towards {objective}, {len(frozen)} "
        f"parameter tensors frozen, {trainable:,} weights trained ({precision})",
        f"val {scored} (95% interval, {quality.samples} samples)",
    ]
    metrics = {
        "final_loss": result.final_loss,
        "train_seconds": result.seconds,
        "frozen_tensors": len(frozen),
        "trained_weights": trainable,
        "eval_split": quality.split,
        "eval_samples": quality.samples,
        **{name: value for name, value in quality.metrics.items()},
        **{f"{name}_ci95": value for name, value in quality.ci95.items()},
    }
    return StepOutcome(student, notes=notes, metrics=metrics)


register_step(apply_finetune)(Finetune)
