"""One energy window at a time in a replica, so overlapping calls never count CPU time twice.

The estimate (and RAPL/NVML) read counters of the whole process or device. A health-check
inference running beside a batch would put each one's CPU time in both windows, so the served
energy per inference came out too high. Forward passes of one replica therefore run one at a
time here, each inside its own window: torch already spreads one forward over the replica's
intra-op threads, so running two at once gained nothing but the double count.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from wattwise.measure.energy import EnergyReading, EnergySource

Result = TypeVar("Result")


class SerialEnergyWindows:
    """Runs work one call at a time, each measured by `source` in a window of its own."""

    def __init__(self, source: EnergySource) -> None:
        self.source = source
        self._lock = threading.Lock()
        self.last_success_monotonic = float("-inf")

    def run(self, work: Callable[[], Result]) -> tuple[Result, EnergyReading]:
        """`work()` inside its own energy window; waits while another call is measured."""
        with self._lock:
            window = self.source.start()
            result = work()
            reading = self.source.stop(window)
            self.last_success_monotonic = time.monotonic()
        return result, reading

    def succeeded_within(self, seconds: float) -> bool:
        """True when a call finished in the last `seconds` (proof enough that the model runs)."""
        return time.monotonic() - self.last_success_monotonic < seconds

    def describe(self) -> dict[str, Any]:
        """Source name and band, for the per-request energy record."""
        return {
            "energy_source": self.source.name,
            "energy_uncertainty_pct": self.source.uncertainty_pct,
        }
