"""Timing a forward pass: warm-up, then repetitions until the figure is stable enough."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingSettings:
    """How long to time one batch size.

    Repetitions continue until both `min_repetitions` and `min_seconds` are reached, and stop at
    `max_repetitions` or `max_seconds`, whichever comes first.
    """

    warmup_repetitions: int = 3
    warmup_seconds: float = 0.3
    min_repetitions: int = 10
    min_seconds: float = 1.0
    max_repetitions: int = 1000
    max_seconds: float = 8.0


QUICK_TIMING = TimingSettings(2, 0.1, 5, 0.5, 300, 4.0)


@dataclass
class LatencyStats:
    """Latency of one batch, in milliseconds, over `repetitions` timed runs.

    `spread_pct` is the interquartile range as a percentage of the median: how stable it was.
    """

    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    repetitions: int
    spread_pct: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        """Percentiles and spread of a list of timings."""
        values = np.asarray(samples_ms, dtype=np.float64)
        p25, p50, p75, p95, p99 = np.percentile(values, [25, 50, 75, 95, 99])
        return cls(
            float(p50),
            float(p95),
            float(p99),
            float(values.mean()),
            float(values.std()),
            float(values.min()),
            len(values),
            float((p75 - p25) / p50 * 100 if p50 else 0.0),
        )


def warm_up(
    run: Callable[[], object],
    settings: TimingSettings = TimingSettings(),
    synchronize: Callable[[], None] | None = None,
) -> int:
    """Run `run` until both warm-up minimums are met (compilation, caches, allocator);
    returns how many calls it took."""
    sync = synchronize or (lambda: None)
    started = time.perf_counter()
    calls = 0
    while (
        calls < settings.warmup_repetitions
        or time.perf_counter() - started < settings.warmup_seconds
    ):
        run()
        calls += 1
        if time.perf_counter() - started > settings.max_seconds:
            break
    sync()
    return calls


def time_repetitions(
    run: Callable[[], object],
    settings: TimingSettings = TimingSettings(),
    synchronize: Callable[[], None] | None = None,
) -> list[float]:
    """Time `run` repeatedly (no warm-up); returns per-call milliseconds."""
    sync = synchronize or (lambda: None)
    samples: list[float] = []
    started = time.perf_counter()
    while True:
        begin = time.perf_counter()
        run()
        sync()
        samples.append((time.perf_counter() - begin) * 1000.0)
        elapsed = time.perf_counter() - started
        enough = len(samples) >= settings.min_repetitions and elapsed >= settings.min_seconds
        if enough or len(samples) >= settings.max_repetitions or elapsed >= settings.max_seconds:
            return samples


def time_forward(
    run: Callable[[], object],
    settings: TimingSettings = TimingSettings(),
    synchronize: Callable[[], None] | None = None,
) -> list[float]:
    """Warm `run` up, then time it repeatedly; returns per-call milliseconds."""
    warm_up(run, settings, synchronize)
    return time_repetitions(run, settings, synchronize)
