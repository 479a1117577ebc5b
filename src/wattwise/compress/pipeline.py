"""Run a recipe on a model: apply each step through the registry, measure before and after.

`compress` (the Python twin of `wattwise compress`) runs the recipe and saves a variant.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import nn

from wattwise.compress.context import CompressionContext, CompressionRun, Snapshot, StepReport
from wattwise.compress.recipe import Recipe, step_is_deferred
from wattwise.compress.steps import HANDLERS
from wattwise.compress.variant import open_model, save_variant
from wattwise.measure.flops import count_flops
from wattwise.measure.latency import QUICK_TIMING, LatencyStats, time_forward
from wattwise.measure.size import parameter_count, serialized_size_bytes
from wattwise.models.registry import LoadedModel
from wattwise.paths import check_creatable_dir
from wattwise.progress import info
from wattwise.tasks.base import forward_on_its_device, module_device


def snapshot(
    module: nn.Module, loaded: LoadedModel, batch_size: int = 32, evaluate: bool = True
) -> Snapshot:
    """Parameters, size, FLOPs, p50 latency at `batch_size` and val quality of `module`."""
    device = module_device(module)
    inputs = tuple(t.to(device) for t in loaded.task.example_inputs(batch_size, "val"))
    with torch.inference_mode():
        samples = time_forward(lambda: module(*inputs), QUICK_TIMING)
    quality = loaded.task.evaluate(forward_on_its_device(module), "val").metrics if evaluate else {}
    one = tuple(t.to(device) for t in loaded.task.example_inputs(1, "val"))
    return Snapshot(
        parameter_count(module),
        serialized_size_bytes(module),
        count_flops(module, one),
        LatencyStats.from_samples(samples).p50_ms,
        batch_size,
        quality,
    )


def run_recipe(
    loaded: LoadedModel,
    recipe: Recipe,
    device: str = "cpu",
    seed: int = 0,
    measure_steps: bool = True,
    show_progress: bool = True,
) -> CompressionRun:
    """Apply the recipe's model-level steps to a copy of `loaded.module`.

    Steps the backend applies at export (ONNX Runtime quantization) are returned in `deferred`.
    """
    teacher = copy.deepcopy(loaded.module).eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    context = CompressionContext(
        loaded, loaded.task, teacher, recipe.backend, device, seed, show_progress
    )
    start = CompressionRun(copy.deepcopy(loaded.module), [], [], [], [], context)
    return _apply_steps(start, recipe, measure_steps)


def continue_run(
    run: CompressionRun, recipe: Recipe, measure_steps: bool = False
) -> CompressionRun:
    """`run` followed by `recipe`'s steps, on a copy of `run.module` (`run` is unchanged).

    Recipes that share a costly prefix (drop_layers + distill) run it once: the draft search
    quantizes a copy of a distilled draft instead of distilling it again. The rebuild records,
    reports and notes are the prefix's followed by the new steps'.
    Example:
        distilled = run_recipe(target, Recipe.from_dict({"steps": [drop, distill]}))
        quantized = continue_run(distilled, Recipe.from_dict({"steps": [int8]}))
    """
    start = CompressionRun(
        copy.deepcopy(run.module),
        list(run.rebuild),
        list(run.deferred),
        list(run.reports),
        list(run.notes),
        run.context,
    )
    return _apply_steps(start, recipe, measure_steps)


def _apply_steps(run: CompressionRun, recipe: Recipe, measure_steps: bool) -> CompressionRun:
    """Apply each model-level step of `recipe` to `run.module` in place of it; defer the rest."""
    module, context, loaded = run.module, run.context, run.context.source
    before = snapshot(module, loaded) if measure_steps else None
    for step in recipe.steps:
        if step_is_deferred(step, recipe.backend.name):
            run.deferred.append(step)
            continue
        if context.show_progress:
            info(f"step: {step.describe()}")
        started = time.perf_counter()
        outcome = HANDLERS[type(step)](context, module, step)
        module = outcome.module.eval()
        after = snapshot(module, loaded) if measure_steps else None
        run.reports.append(
            StepReport(
                step.describe(),
                time.perf_counter() - started,
                before,
                after,
                outcome.notes,
                outcome.metrics,
            )
        )
        run.rebuild.extend(outcome.rebuild)
        run.notes.extend(outcome.notes)
        before = after
    run.module = module
    return run


def compress(
    model: str | LoadedModel,
    recipe: Recipe | str | Path | dict,
    output: str | Path,
    device: str = "cpu",
    seed: int = 0,
    batch_sizes: tuple[int, ...] = (1, 32),
    region: str | None = None,
    measure_steps: bool = True,
    show_progress: bool = True,
    options=None,
):
    """Run `recipe` on `model` and write a variant directory at `output` (atomically).

    Returns the saved `Variant`. Example:
        wattwise.compress("minilm", "recipe.yaml", "out/")
    """
    check_creatable_dir(Path(output))  # before any work: a bad output path fails at once
    loaded = model if isinstance(model, LoadedModel) else open_model(model, options)
    if isinstance(recipe, (str, Path)):
        recipe = Recipe.from_yaml(recipe)
    elif isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    run = run_recipe(loaded, recipe, device, seed, measure_steps, show_progress)
    return save_variant(
        run,
        recipe,
        Path(output),
        batch_sizes=batch_sizes,
        region=region,
        show_progress=show_progress,
    )
