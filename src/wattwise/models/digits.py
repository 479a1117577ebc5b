"""`digits-cnn`: a small CNN for scikit-learn's bundled 8×8 digits, trained on first use."""

from __future__ import annotations

import torch
from torch import nn

from wattwise.models.weights import load_weights, save_weights
from wattwise.paths import cache_dir
from wattwise.progress import info
from wattwise.tasks.arrays import ArrayTask, digits_task

CACHE_NAME = "digits-cnn-v1.safetensors"
TRAIN_STEPS = 600


class DigitsCNN(nn.Module):
    """Two conv layers and two linear layers; input (N, 1, 8, 8) scaled to [0, 1]."""

    def __init__(self, channels: tuple[int, int] = (32, 64), hidden: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[1] * 16, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def train_digits_cnn(task: ArrayTask, steps: int = TRAIN_STEPS, seed: int = 0) -> DigitsCNN:
    """Train a fresh DigitsCNN on the task's train split with the project's trainer."""
    from wattwise.fit.loop import TrainConfig, fit

    torch.manual_seed(seed)
    model = DigitsCNN()
    config = TrainConfig(steps=steps, learning_rate=2e-3, weight_decay=1e-4, seed=seed)
    fit(
        model,
        task.training_batches(64, seed=seed),
        task.supervised_loss,
        config,
        description="training digits-cnn (first use)",
    )
    return model


def load_digits_cnn() -> tuple[DigitsCNN, ArrayTask]:
    """The cached trained model (training it on first use) and its task."""
    task = digits_task()
    path = cache_dir() / CACHE_NAME
    model = DigitsCNN()
    if path.is_file():
        try:
            load_weights(model, path)
            return model.eval(), task
        except Exception:  # noqa: BLE001 - a broken cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    info("digits-cnn: training on scikit-learn digits (first use, cached afterwards)")
    model = train_digits_cnn(task)
    save_weights(model, path)
    return model.eval(), task
