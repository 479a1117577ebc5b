"""Quantization-aware training: fine-tune with fake quantization, then convert for real.

    - quantize: {method: qat, target: int8_dynamic, steps: 100}

torchao's QAT (`QATConfig`) swaps the selected Linear layers for fake-quantized ones that
round weights (and, for int8_dynamic, activations per token) the way the target will; the
project's one training loop (`wattwise.fit.loop.fit`) fine-tunes them on the task's
training data; the layers are swapped back and quantized as `int8_dynamic` or
`int4_weight_only` would quantize them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.compress.steps.quantize import torch_outcome
from wattwise.compress.steps.quantize_common import resolve_implementation, selected_names
from wattwise.errors import ConfigError
from wattwise.tasks.base import TrainingBatch


def fake_quantize_configs(step: QuantizationAwareTraining):
    """(activation, weight) fake-quantize configs that mirror the target's rounding."""
    from torchao.quantization.qat import IntxFakeQuantizeConfig

    if step.target == "int4_weight_only":
        return None, IntxFakeQuantizeConfig(torch.int4, group_size=step.group_size)
    weights = "per_channel" if step.granularity == "per_channel" else "per_tensor"
    return (
        IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False),
        IntxFakeQuantizeConfig(torch.int8, weights),
    )


def training_loss(context):
    """The task's supervised loss if it has labels, else cosine distance to the teacher."""
    task = context.task
    if getattr(task, "labels", None) is not None and hasattr(task, "supervised_loss"):
        return task.supervised_loss
    teacher = context.teacher

    def cosine_to_teacher(model: nn.Module, batch: TrainingBatch) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(*batch.inputs).float()
        outputs = model(*batch.inputs).float()
        return (1 - F.cosine_similarity(outputs.flatten(1), target.flatten(1), dim=1)).mean()

    return cosine_to_teacher


def apply_qat(context, module: nn.Module, step: QuantizationAwareTraining) -> StepOutcome:
    """Fake-quant fine-tune for `step.steps` optimizer steps, then convert."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    from wattwise.fit.loop import TrainConfig, fit

    if context.backend.name == "onnxruntime":
        raise ConfigError(
            "quantize qat converts in PyTorch, which ONNX export cannot carry; use backend "
            "eager or torch_compile"
        )
    names = set(selected_names(module, step.layers))
    chosen = lambda _module, name: name in names  # noqa: E731
    activation, weight = fake_quantize_configs(step)
    quantize_(
        module,
        QATConfig(activation_config=activation, weight_config=weight, step="prepare"),
        chosen,
    )
    for parameter in module.parameters():
        parameter.requires_grad_(True)
    result = fit(
        module,
        context.task.training_batches(step.batch_size, seed=context.seed),
        training_loss(context),
        TrainConfig(steps=step.steps, learning_rate=step.learning_rate, seed=context.seed),
        description=f"QAT ({step.target})",
        show_progress=context.show_progress,
    )
    quantize_(module, QATConfig(step="convert"), chosen)
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    if step.target == "int4_weight_only":
        record = {
            "implementation": "torchao",
            "scheme": "int4_weight_only",
            "group_size": step.group_size,
            "kernel": "cpu",
        }
    else:
        implementation = resolve_implementation(step.implementation, context.backend.name)
        record = {
            "implementation": implementation,
            "scheme": "int8_dynamic",
            "granularity": step.granularity,
        }
    note = (
        f"QAT: {result.steps} fake-quantized fine-tuning steps (final loss "
        f"{result.final_loss:.4f}), then {step.target} via {record['implementation']}"
    )
    outcome = torch_outcome(context, module, step, record, note)
    outcome.metrics.update(
        {
            "qat_steps": result.steps,
            "qat_final_loss": result.final_loss,
            "qat_seconds": result.seconds,
        }
    )
    return outcome


@register_step(apply_qat)
class QuantizationAwareTraining(Step):
    """`quantize: {method: qat, target, steps, batch_size, learning_rate, ...}`.

    `target` is what the layers become after training (int8_dynamic or int4_weight_only);
    `granularity`/`implementation` apply to int8_dynamic, `group_size` to int4."""

    kind = "quantize"
    method: Literal["qat"] = "qat"
    target: Literal["int8_dynamic", "int4_weight_only"] = "int8_dynamic"
    steps: int = 100
    batch_size: int = 32
    learning_rate: float = 1e-5
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    group_size: int = 128
    implementation: Literal["auto", "torchao", "torch_ao"] = "auto"
