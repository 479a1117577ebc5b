"""`distill`: train the compressed model (student) to reproduce the model before the recipe.

The teacher is `context.teacher`, a frozen copy taken before the first step; the student is the
model as the previous steps left it. Classifiers match softened logits (KL), encoders match
embeddings (cosine or MSE). Training runs through the project's one loop (`train.trainer.fit`)
in bf16 autocast where the device computes bf16 natively (CUDA, AVX512-BF16/AMX CPUs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.compress.training import (
    default_distill_loss,
    default_learning_rate,
    distillation_loss,
    mixed_precision,
    require_training_data,
)
from wattwise.fit.loop import TrainConfig, fit


class Distill(Step):
    """`distill: {steps: 300, temperature: 2.0, loss: kl|mse|cosine}`.

    `loss` defaults to kl for logits and cosine for embeddings; `temperature` softens the
    logits for kl; `batch_size` and `learning_rate` (AdamW; default 1e-3 for classifiers,
    1e-4 for encoders) set the optimisation; `precision` auto picks bf16 where it is native,
    else fp32.
    """

    kind = "distill"
    method: Literal[""] = ""
    steps: int = Field(300, ge=1, le=100_000)
    temperature: float = Field(2.0, gt=0)
    loss: Literal["auto", "kl", "mse", "cosine"] = "auto"
    batch_size: int = Field(32, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    warmup_steps: int = Field(0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"


def apply_distill(context, module: nn.Module, step: Distill) -> StepOutcome:
    """Train `module` on the task's training inputs to match the teacher's outputs."""
    require_training_data(context.task, "distill")
    loss_name = default_distill_loss(context.task, step.loss)
    precision = mixed_precision(context.device, step.precision)
    teacher = context.teacher.to(context.device).eval()
    student = module.to(context.device)
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    config = TrainConfig(
        steps=step.steps,
        learning_rate=step.learning_rate or default_learning_rate(context.task),
        precision=precision,
        warmup_steps=step.warmup_steps,
        seed=context.seed,
    )
    result = fit(
        student,
        context.task.training_batches(step.batch_size, seed=context.seed),
        distillation_loss(teacher, loss_name, step.temperature, context.device),
        config,
        description=f"distill ({loss_name})",
        show_progress=context.show_progress,
    )
    context.teacher.cpu()
    first_loss = result.log[0].loss if result.log else float("nan")
    temperature = f", temperature {step.temperature:g}" if loss_name == "kl" else ""
    notes = [
        f"distilled {result.steps} steps from the model before the recipe ({loss_name} loss"
        f"{temperature}, batch {step.batch_size}, {precision}): loss {first_loss:.4g} → "
        f"{result.final_loss:.4g}"
    ]
    metrics = {
        "loss": loss_name,
        "precision": precision,
        "first_loss": first_loss,
        "final_loss": result.final_loss,
        "train_seconds": result.seconds,
        "steps": result.steps,
    }
    return StepOutcome(student.cpu().eval(), notes=notes, metrics=metrics)


register_step(apply_distill)(Distill)
