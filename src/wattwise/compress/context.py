"""What a step handler may use besides the model: task data, the teacher, the backend."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from wattwise.compress.recipe import BackendSpec
from wattwise.models.registry import LoadedModel
from wattwise.tasks.base import Task


@dataclass
class CompressionContext:
    """Shared by every step of one recipe run.

    Attributes:
        source: the model as loaded (its `module` is not modified; steps work on a copy).
        task: data and metrics (calibration, training and evaluation data come from here).
        teacher: frozen copy of the model before the recipe (for distillation).
        backend: where the variant will run.
        device: "cpu" or "cuda".
        seed: seed for every random choice a step makes.
        show_progress: whether steps may draw progress bars.
    """

    source: LoadedModel
    task: Task
    teacher: nn.Module
    backend: BackendSpec
    device: str = "cpu"
    seed: int = 0
    show_progress: bool = True
