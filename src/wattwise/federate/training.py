"""Local training and held-out evaluation, shared by clients, the server and the baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wattwise.tasks.arrays import ArrayTask

EVAL_BATCH = 512


def model_arrays(model: nn.Module) -> list[np.ndarray]:
    """The model's state as fp32 arrays, in state_dict order (what Flower carries)."""
    return [v.detach().cpu().float().numpy().copy() for v in model.state_dict().values()]


def load_arrays(model: nn.Module, arrays: list[np.ndarray]) -> None:
    """Put fp32 arrays back into the model, each cast to its tensor's own dtype."""
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"{len(arrays)} arrays for a model with {len(state)} tensors")
    new_state = {
        name: torch.as_tensor(array).to(tensor.dtype).reshape(tensor.shape)
        for (name, tensor), array in zip(state.items(), arrays, strict=True)
    }
    model.load_state_dict(new_state, strict=True)


BatchLoss = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains on its own samples in one round (and the baseline in one epoch).

    Attributes:
        epochs: passes over the samples.
        batch_size: samples per optimizer step.
        learning_rate: the optimizer's learning rate.
        seed: seeds the shuffles; the same seed gives the same update in any process.
        proximal_mu: FedProx's μ: μ/2·‖w − w_global‖² is added to the loss when > 0.
        max_steps: caps the optimizer steps of the call (None: every batch of every epoch).
    """

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    proximal_mu: float = 0.0
    max_steps: int | None = None


class LocalData(Protocol):
    """A client's own samples and the loss a model trains on them (they never leave it)."""

    def __len__(self) -> int: ...

    def train(self, model: nn.Module, training: LocalTraining) -> float:
        """Train `model` on these samples; return the mean loss of the last epoch."""


def train_steps(
    model: nn.Module,
    samples: int,
    batch_loss: BatchLoss,
    training: LocalTraining,
    optimizer: str = "sgd",
) -> float:
    """The one local loop: seeded shuffles of `samples` positions, `batch_loss(model, positions)`.

    `optimizer` "sgd" is SGD with momentum 0.9 (small classifiers); "adamw" is AdamW, what
    transformer fine-tuning uses. FedProx adds μ/2·‖w − w_global‖² when μ > 0. `max_steps` caps
    the optimizer steps of the call (None: every batch of every epoch). Returns the mean loss of
    the last epoch; the same seed gives the same update in any process.
    """
    generator = torch.Generator().manual_seed(training.seed)
    torch.manual_seed(training.seed)
    model.train()
    proximal = training.proximal_mu > 0
    anchor = [p.detach().clone() for p in model.parameters()] if proximal else None
    if optimizer == "adamw":
        step_rule = torch.optim.AdamW(model.parameters(), lr=training.learning_rate)
    else:
        step_rule = torch.optim.SGD(model.parameters(), lr=training.learning_rate, momentum=0.9)
    last_loss, steps = 0.0, 0
    for _ in range(training.epochs):
        order = torch.randperm(samples, generator=generator)
        losses = []
        for start in range(0, len(order), training.batch_size):
            if training.max_steps is not None and steps >= training.max_steps:
                break
            loss = batch_loss(model, order[start : start + training.batch_size])
            if anchor is not None:
                drift = sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + training.proximal_mu / 2 * drift
            step_rule.zero_grad(set_to_none=True)
            loss.backward()
            step_rule.step()
            steps += 1
            losses.append(float(loss.detach()))
        last_loss = float(np.mean(losses)) if losses else last_loss
    model.eval()
    return last_loss


@dataclass(frozen=True)
class LabelledArrays:
    """A classification client's samples: input arrays and their class labels (cross-entropy)."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.inputs)

    def train(self, model: nn.Module, training: LocalTraining) -> float:
        """SGD with momentum on cross-entropy (see `train_steps`)."""

        def batch_loss(module: nn.Module, positions: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(module(self.inputs[positions]).float(), self.labels[positions])

        return train_steps(model, len(self), batch_loss, training)


@torch.no_grad()
def accuracy_on(model: nn.Module, task: ArrayTask, split: str = "test") -> float:
    """Top-1 accuracy (fraction) of the model on one split of the task."""
    model.eval()
    rows = task.splits[split]
    correct = 0
    for start in range(0, len(rows), EVAL_BATCH):
        batch = rows[start : start + EVAL_BATCH]
        predicted = model(task.features[batch]).argmax(dim=-1)
        correct += int((predicted == task.labels[batch]).sum())
    return correct / max(1, len(rows))
