"""Peak memory while a model runs: CPU resident-set growth (sampled) or CUDA max allocated."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import torch


@dataclass
class PeakMemory:
    """Peak memory above the level before the window, in bytes, and how it was read."""

    peak_bytes: int = 0
    source: str = ""


@contextmanager
def track_peak_memory(device: str = "cpu", interval_s: float = 0.002):
    """Measure peak memory growth inside the block.

    CPU: a thread samples this process's RSS every `interval_s` (peaks shorter than that can be
    missed). CUDA: torch.cuda.max_memory_allocated above the allocation at entry.
    """
    result = PeakMemory()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result.peak_bytes = max(0, torch.cuda.max_memory_allocated() - base)
        result.source = "cuda_max_allocated"
        return
    process = psutil.Process(os.getpid())
    base = process.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result.peak_bytes = max(0, peak[0] - base)
        result.source = "cpu_rss_growth"
