"""Served energy: overlapping calls (a health check beside a batch) never count CPU time twice."""

from __future__ import annotations

import threading
import time

from wattwise.measure.energy import EstimatedEnergy
from wattwise.serve.energy_windows import SerialEnergyWindows


def _burn_cpu(seconds: float) -> int:
    """Busy Python work for about `seconds` of this thread's CPU time."""
    end, count = time.thread_time() + seconds, 0
    while time.thread_time() < end:
        count += 1
    return count


def test_overlapping_calls_sum_to_no_more_than_the_whole_process_used():
    source = EstimatedEnergy()
    windows = SerialEnergyWindows(source)
    readings = []
    whole = source.start()
    threads = [
        threading.Thread(target=lambda: readings.append(windows.run(lambda: _burn_cpu(0.3))[1]))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = source.stop(whole)
    assert len(readings) == 3
    # Each window saw only its own call: the parts add up to at most the whole (plus rounding).
    assert sum(r.energy_j for r in readings) <= total.energy_j * 1.02 + 1e-6
    assert sum(r.duration_s for r in readings) <= total.duration_s + 1e-3
    assert all(r.energy_j > 0 for r in readings)


def test_a_recent_success_is_remembered_for_the_health_check():
    windows = SerialEnergyWindows(EstimatedEnergy())
    assert not windows.succeeded_within(60)
    windows.run(lambda: None)
    assert windows.succeeded_within(60)
    assert windows.describe()["energy_source"] == "estimate"
