"""Choose the batch size by measured energy per input, on the job's own inputs.

Each candidate runs a few batches of real inputs from the middle of the processing order
(typical lengths for sorted text) inside one energy window of the best available source
(NVML, RAPL, or the stated estimate). The smallest joules per input wins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from wattwise.batch.inputs import BatchInputs, model_inputs
from wattwise.measure.energy import detect_energy_source
from wattwise.models.registry import LoadedModel

DEFAULT_CANDIDATES = (1, 8, 32, 128)
MIN_WINDOW_S = 0.5
MIN_BATCHES = 3


@dataclass
class BatchSizeTrial:
    """Energy and time per input at one batch size (a short measured window)."""

    batch_size: int
    energy_j_per_input: float
    seconds_per_input: float
    inputs_measured: int


@dataclass
class BatchSizeChoice:
    """The chosen batch size, every trial, and the energy source that measured them."""

    batch_size: int
    trials: list[BatchSizeTrial]
    energy_source: str
    energy_uncertainty_pct: float
    method: str


def choose_batch_size(
    loaded: LoadedModel,
    inputs: BatchInputs,
    candidates: tuple[int, ...] = DEFAULT_CANDIDATES,
    device: str = "cpu",
) -> BatchSizeChoice:
    """Measure J/input at each candidate (capped at the input count); pick the smallest."""
    source = detect_energy_source(device)
    sizes = sorted({min(size, len(inputs)) for size in candidates})
    trials = []
    module = loaded.module
    with torch.inference_mode():
        for size in sizes:
            middle = max(0, len(inputs) // 2 - size // 2)
            positions = [inputs.order[(middle + k) % len(inputs)] for k in range(size)]
            batch = tuple(t.to(device) for t in model_inputs(loaded, inputs, positions))
            module(*batch)  # warm-up outside the window
            token, started, batches = source.start(), time.perf_counter(), 0
            while batches < MIN_BATCHES or time.perf_counter() - started < MIN_WINDOW_S:
                module(*batch)
                batches += 1
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            reading = source.stop(token)
            count = batches * size
            trials.append(
                BatchSizeTrial(size, reading.energy_j / count, reading.duration_s / count, count)
            )
    best = min(trials, key=lambda t: (t.energy_j_per_input, t.batch_size))
    return BatchSizeChoice(
        best.batch_size, trials, source.name, source.uncertainty_pct, source.method
    )
