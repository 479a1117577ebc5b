"""Local training and held-out evaluation, shared by clients, the server and the baseline."""

from __future__ import annotations

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


def train_local(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    proximal_mu: float = 0.0,
) -> float:
    """SGD (momentum 0.9) over the given samples; FedProx adds μ/2·‖w − w_global‖² when μ > 0.

    Returns the mean training loss of the last epoch. The shuffle is seeded, so the same seed
    gives the same update in any process.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.train()
    anchor = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else None
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
    last_loss = 0.0
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        losses = []
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(model(inputs[batch]).float(), labels[batch])
            if anchor is not None:
                drift = sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                loss = loss + proximal_mu / 2 * drift
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        last_loss = float(np.mean(losses)) if losses else 0.0
    model.eval()
    return last_loss


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
