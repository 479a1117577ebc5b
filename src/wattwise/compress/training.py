"""What the training steps (distill, finetune) share: data checks, losses, mixed precision.

Both train through the project's one loop, `wattwise.fit.loop.fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wattwise.errors import ConfigError, DataError
from wattwise.tasks.base import Task, TrainingBatch

LossFn = Callable[[nn.Module, TrainingBatch], torch.Tensor]
DISTILL_LOSSES = ("kl", "mse", "cosine")


def require_training_data(task: Task, step_label: str) -> None:
    """Raise DataError unless the task has real training samples (not seeded random inputs)."""
    has_data = getattr(task, "has_training_data", True) and task.split_size("train") > 0
    if not has_data:
        raise DataError(
            f"{step_label} needs training data, and task {task.name!r} has none; pass the "
            "model's data with --data (a .csv, .npz or .jsonl file)"
        )


@cache
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them CPU bf16 matmuls are emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def mixed_precision(device: str, requested: str = "auto") -> str:
    """The trainer precision to use: `requested`, or for "auto" bf16 where it is fast.

    CUDA with bf16 support → bf16; a CPU with native bf16 instructions → bf16; else fp32.
    """
    if requested != "auto":
        if requested == "fp16" and not device.startswith("cuda"):
            raise ConfigError("precision fp16 needs CUDA; use bf16 or auto on CPU")
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_has_native_bf16() else "fp32"


def distillation_loss(teacher: nn.Module, loss: str, temperature: float, device: str) -> LossFn:
    """loss_fn(student, batch): distance of the student's outputs to the frozen teacher's.

    kl: T² · KL(softmax(teacher/T) ‖ softmax(student/T)) on logits (Hinton et al., 2015: the
    T² keeps gradient sizes comparable across temperatures); mse: mean squared difference;
    cosine: 1 − mean cosine similarity (embeddings).
    """

    def compute(student: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        inputs = tuple(t.to(device) for t in batch.inputs)
        with torch.no_grad():
            target = teacher(*inputs).float()
        output = student(*inputs).float()
        if loss == "kl":
            return (temperature**2) * F.kl_div(
                F.log_softmax(output / temperature, dim=-1),
                F.log_softmax(target / temperature, dim=-1),
                reduction="batchmean",
                log_target=True,
            )
        if loss == "mse":
            return F.mse_loss(output, target)
        return 1.0 - F.cosine_similarity(output.flatten(1), target.flatten(1), dim=1).mean()

    return compute


def default_distill_loss(task: Task, requested: str) -> str:
    """KL for classifiers (logits), cosine for encoders; reject KL on non-logits outputs."""
    if requested == "auto":
        return "kl" if task.output_kind == "logits" else "cosine"
    if requested == "kl" and task.output_kind != "logits":
        raise ConfigError(
            f"loss kl needs logits, and {task.name} outputs {task.output_kind}; "
            "use loss: cosine or mse"
        )
    return requested


def default_learning_rate(task: Task) -> float:
    """AdamW rate when a step names none: 1e-3 suits small classifiers trained from their own
    weights; transformer encoders diverge there, 1e-4 is the usual ceiling for BERT-size
    fine-tuning (Devlin et al., 2019 used 2e-5 to 5e-5 for full fine-tuning)."""
    return 1e-3 if task.output_kind == "logits" else 1e-4


def supervised_loss(task: Task, device: str) -> LossFn | None:
    """The task's own labelled loss (cross-entropy, MSE) on `device`, or None without labels."""
    task_loss = getattr(task, "supervised_loss", None)
    if task_loss is None or getattr(task, "labels", None) is None:
        return None

    def compute(model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        moved = TrainingBatch(
            tuple(t.to(device) for t in batch.inputs),
            batch.targets.to(device) if batch.targets is not None else None,
        )
        return task_loss(model, moved)

    return compute
