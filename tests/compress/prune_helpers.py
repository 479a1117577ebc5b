"""Shared pieces of the pruning/distillation tests: run a recipe, time a forward fairly."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from wattwise.compress.context import CompressionRun
from wattwise.compress.pipeline import run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import save_variant
from wattwise.models.registry import LoadedModel


def run_steps(loaded: LoadedModel, steps: list[dict], backend: str = "eager") -> CompressionRun:
    """Apply `steps` to a copy of the model without the per-step measurements (fast)."""
    recipe = Recipe.from_dict({"steps": steps, "backend": backend})
    return run_recipe(loaded, recipe, measure_steps=False, show_progress=False)


def save_unprofiled(run: CompressionRun, steps: list[dict], output: Path, backend="eager"):
    """Save a variant (hashes, probe, rebuild records) without the slow profile."""
    recipe = Recipe.from_dict({"steps": steps, "backend": backend})
    return save_variant(run, recipe, output, show_progress=False, profile=False)


def fastest_ms(module: torch.nn.Module, inputs, repeats: int = 10) -> float:
    """Fastest of `repeats` forwards in milliseconds (after two warm-up calls): on a shared
    machine, other processes only ever add time, so the fastest run is the model's own cost."""
    samples = []
    with torch.inference_mode():
        for _ in range(2):
            module(*inputs)
        for _ in range(repeats):
            started = time.perf_counter()
            module(*inputs)
            samples.append((time.perf_counter() - started) * 1000)
    return min(samples)


def interleaved_latency_ms(first, second, inputs, rounds: int = 5) -> tuple[float, float]:
    """Median over `rounds` of each model's fastest latency, timed alternately in one process,
    so load from other processes hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(fastest_ms(first, inputs))
        b.append(fastest_ms(second, inputs))
    return statistics.median(a), statistics.median(b)
