"""A recipe run's types: what a step handler may use (`CompressionContext`) and what the run
produced (`CompressionRun` with a `StepReport` per step, each with `Snapshot`s)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from wattwise.compress.recipe import BackendSpec
from wattwise.compress.steps import Step
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


@dataclass
class Snapshot:
    """Quick measures of a model between steps (quality on the val split)."""

    parameters: int
    size_bytes: int
    flops_per_sample: int | None
    latency_ms_p50: float
    batch_size: int
    quality: dict[str, float]


@dataclass
class StepReport:
    """One step: what it was, its measures before and after, its notes and metrics."""

    step: str
    seconds: float
    before: Snapshot | None
    after: Snapshot | None
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CompressionRun:
    """The compressed (not yet exported) model and what happened on the way."""

    module: nn.Module
    rebuild: list[dict[str, Any]]
    deferred: list[Step]
    reports: list[StepReport]
    notes: list[str]
    context: CompressionContext
