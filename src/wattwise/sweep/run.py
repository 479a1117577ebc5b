"""Measure a model's energy/time trade-off over batch sizes, CPU threads and GPU power limits.

Each configuration runs the model's own profiling inputs: warm-up outside the energy window,
then timed repetitions inside it (the same protocol as `profile`). The pick minimises Zeus's
cost metric (Chung et al., "Zeus: Understanding and Optimizing GPU Energy Consumption of DNN
Training", NSDI 2023): cost = η·energy + (1−η)·max_power·time, per inference, where max_power
is the GPU's highest settable power limit (on CPU: the estimate's ceiling at the most threads
swept, threads × 3.5 W, stated). η = 1 minimises energy alone, η = 0 time alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from wattwise.errors import ConfigError
from wattwise.measure.energy import WATTS_PER_BUSY_CORE, detect_energy_source
from wattwise.measure.latency import (
    QUICK_TIMING,
    LatencyStats,
    TimingSettings,
    time_repetitions,
    warm_up,
)
from wattwise.models.registry import LoadedModel

ESTIMATE_BLIND_SPOTS = (
    "The CPU figures are estimates (process CPU time × 3.5 W per busy core + 0.392 W per GB "
    "resident), so energy here ranks configurations by CPU-seconds: the estimate cannot see "
    "what the CPU really draws at each thread count (frequency and voltage changes, turbo, "
    "SIMD width), memory-bound stalls counted as busy time, uncore and idle power, other "
    "processes, or the platform (power supply, fans, cooling)."
)


@dataclass
class SweepPoint:
    """One configuration, measured. Energy and time are per inference (one sample)."""

    batch_size: int
    threads: int | None
    power_limit_w: float | None
    latency_ms_p50: float
    throughput_per_s: float
    energy_j_per_inference: float
    seconds_per_inference: float
    repetitions: int
    cost: float = 0.0


@dataclass
class SweepResult:
    """Every point, the pick under Zeus's cost with `eta`, and how energy was obtained."""

    model: str
    device: str
    eta: float
    max_power_w: float
    max_power_source: str
    points: list[SweepPoint]
    pick: SweepPoint
    energy_source: str
    energy_uncertainty_pct: float
    energy_method: str
    notes: list[str] = field(default_factory=list)
    plot_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def zeus_cost(point: SweepPoint, eta: float, max_power_w: float) -> float:
    """η·energy + (1−η)·max_power·time, per inference (joules)."""
    return (
        eta * point.energy_j_per_inference + (1 - eta) * max_power_w * point.seconds_per_inference
    )


def check_sweep_settings(
    threads: tuple[int, ...], power_limits_w: tuple[float, ...], device: str, eta: float
) -> None:
    """Refuse settings that cannot work, before any model is loaded."""
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"--eta must be within [0, 1], got {eta}")
    if power_limits_w and not device.startswith("cuda"):
        raise ConfigError("--power-limits needs --device cuda (NVIDIA GPUs, through NVML)")
    if threads and device.startswith("cuda"):
        raise ConfigError("--threads sweeps CPU threads; leave it out with --device cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but CUDA is not available here; use --device cpu")


def _measure(module, inputs, device, source, timing: TimingSettings) -> tuple[LatencyStats, float]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    run = lambda: module(*inputs)  # noqa: E731
    with torch.inference_mode():
        warm_up(run, timing, sync)
        token = source.start()
        samples = time_repetitions(run, timing, sync)
        reading = source.stop(token)
    return LatencyStats.from_samples(samples), reading.energy_j / len(samples)


def sweep_model(
    loaded: LoadedModel,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
    threads: tuple[int, ...] = (),
    power_limits_w: tuple[float, ...] = (),
    device: str = "cpu",
    eta: float = 0.5,
    timing: TimingSettings = QUICK_TIMING,
    gpu_index: int = 0,
    progress=None,
) -> SweepResult:
    """Measure every (batch size × threads × power limit) and pick under Zeus's cost."""
    check_sweep_settings(threads, power_limits_w, device, eta)
    module = loaded.module.eval()
    if not hasattr(module, "session"):
        module.to(device)
    source = detect_energy_source(device)
    original_threads = torch.get_num_threads()
    points: list[SweepPoint] = []
    limits_context = _power_context(power_limits_w, gpu_index)
    try:
        with limits_context as limits:
            for limit in power_limits_w or (None,):
                if limit is not None:
                    limits.set_watts(limit)
                for count in threads or (None,):
                    if count is not None:
                        torch.set_num_threads(count)
                    for size in batch_sizes:
                        inputs = tuple(t.to(device) for t in loaded.task.example_inputs(size))
                        stats, energy_per_batch = _measure(module, inputs, device, source, timing)
                        points.append(
                            SweepPoint(
                                size, count, limit, stats.p50_ms, size / (stats.p50_ms / 1000),
                                energy_per_batch / size, stats.p50_ms / 1000 / size,
                                stats.repetitions,
                            )
                        )  # fmt: skip
                        if progress is not None:
                            progress(points[-1])
            max_power_w, max_power_source = _max_power(limits, device, threads, original_threads)
    finally:
        torch.set_num_threads(original_threads)
    for point in points:
        point.cost = zeus_cost(point, eta, max_power_w)
    pick = min(points, key=lambda p: p.cost)
    notes = [ESTIMATE_BLIND_SPOTS] if source.name == "estimate" else []
    return SweepResult(
        loaded.name, device, eta, max_power_w, max_power_source, points, pick,
        source.name, source.uncertainty_pct, source.method, notes,
    )  # fmt: skip


def _power_context(power_limits_w: tuple[float, ...], gpu_index: int):
    if not power_limits_w:
        return contextlib.nullcontext(None)
    from wattwise.sweep.power import PowerLimits

    return PowerLimits(gpu_index)


def _max_power(
    limits, device: str, threads: tuple[int, ...], default_threads: int
) -> tuple[float, str]:
    gpu_source = "the GPU's highest settable power limit (NVML)"
    if limits is not None:
        return limits.max_watts, gpu_source
    if device.startswith("cuda"):
        from wattwise.sweep.power import gpu_max_watts

        return gpu_max_watts(torch.device(device).index or 0), gpu_source
    most = max(threads or (default_threads,))
    return most * WATTS_PER_BUSY_CORE, (
        f"estimate ceiling: {most} threads × {WATTS_PER_BUSY_CORE} W per busy core"
    )
