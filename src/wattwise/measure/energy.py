"""Energy sources behind one small protocol: NVML, RAPL, or a stated estimate.

Every source says which it is (`name`), how uncertain it is (`uncertainty_pct`: the band its
vendor or the literature documents; docs/energy.md) and what it counts (`method`: the hardware
counters count the whole device or package, shared with every other process on it). Callers open a window with `start()` and close it with `stop(token)`; they
never care which source is present (the idea of zeus's `begin_window`/`end_window`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

RAPL_ROOT = Path("/sys/class/powercap")

# Estimate coefficients from the Cloud Carbon Footprint methodology (cloudcarbonfootprint.org,
# "Energy Estimate" section): average max watts per vCPU across cloud CPUs (3.5 W) and memory
# watts per GB (0.392 W). Per-vCPU power of real CPUs ranges about 0.7-6 W, so the band is wide.
WATTS_PER_BUSY_CORE = 3.5
WATTS_PER_GB_RESIDENT = 0.392
ESTIMATE_UNCERTAINTY_PCT = 60.0
# NVIDIA documents board power readings as accurate to ±5% (nvidia-smi / NVML documentation,
# "power.draw"); the energy counter integrates that reading.
NVML_UNCERTAINTY_PCT = 5.0
# RAPL is a model inside the CPU, not a meter: within a few percent of plug power on Intel
# Haswell and later (Hackenberg et al., "An Energy Efficiency Feature Survey of the Intel
# Haswell Processor", 2015), looser on AMD Zen (Schöne et al., "Energy Efficiency Aspects of
# the AMD Zen 2 Architecture", 2021). ±10% covers both; see docs/energy.md.
RAPL_UNCERTAINTY_PCT = 10.0
SHARED_DEVICE_NOTE = "shared with every other process on it"


@dataclass(frozen=True)
class EnergyReading:
    """Energy used in one measurement window.

    Attributes:
        energy_j: joules consumed in the window (measured or estimated, see `source`).
        duration_s: wall-clock seconds of the window.
        source: "nvml", "rapl" or "estimate".
        uncertainty_pct: ± band in percent (NVML 5, RAPL 10, estimate 60; docs/energy.md).
        method: one sentence on how the figure was obtained.
    """

    energy_j: float
    duration_s: float
    source: str
    uncertainty_pct: float
    method: str

    @property
    def is_estimate(self) -> bool:
        """True when the figure comes from a model, not a counter."""
        return self.source == "estimate"


class EnergySource(Protocol):
    """What every energy source offers."""

    name: str
    uncertainty_pct: float
    method: str

    def start(self) -> Any:
        """Open a window; returns a token for `stop`."""

    def stop(self, token: Any) -> EnergyReading:
        """Close the window opened by `start`."""


class NvmlEnergy:
    """The GPU's total-energy counter (NVML, millijoules since driver load), summed over GPUs."""

    name = "nvml"
    uncertainty_pct = NVML_UNCERTAINTY_PCT
    method = (
        "NVML total-energy counter of the GPU(s), difference over the window: the whole "
        f"device, {SHARED_DEVICE_NOTE}; ±{NVML_UNCERTAINTY_PCT:.0f}% (NVIDIA's power accuracy)"
    )

    def __init__(self, device_indices: list[int] | None = None) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        indices = device_indices if device_indices is not None else list(range(count))
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        for handle in self._handles:  # raises NVMLError_NotSupported on old GPUs
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)

    def _total_mj(self) -> int:
        return sum(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles)

    def start(self) -> tuple[float, int]:
        return time.perf_counter(), self._total_mj()

    def stop(self, token: tuple[float, int]) -> EnergyReading:
        start_time, start_mj = token
        seconds = time.perf_counter() - start_time
        joules = (self._total_mj() - start_mj) / 1000.0
        if joules > 0:
            return EnergyReading(joules, seconds, self.name, self.uncertainty_pct, self.method)
        # The counter advances in steps: a window of a few milliseconds can read 0 J, which is
        # not a measurement. The board's power reading times the window stands in, and says so.
        watts = sum(self._nvml.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000.0
        return EnergyReading(
            watts * seconds,
            seconds,
            self.name,
            self.uncertainty_pct,
            f"NVML power reading ({watts:.0f} W) × the {seconds * 1000:.1f} ms window: the "
            f"energy counter did not advance in so short a window; whole device, "
            f"{SHARED_DEVICE_NOTE}",
        )


def rapl_package_domains(root: Path = RAPL_ROOT) -> list[Path]:
    """Top-level RAPL package domains that can be read (never nested core/dram subdomains,
    whose energy is already part of the package's, so adding them would count it twice)."""
    if not root.exists():
        return []
    domains = []
    for path in sorted(root.glob("intel-rapl:*")):
        if path.name.count(":") != 1:  # intel-rapl:0:1 is a subdomain of intel-rapl:0
            continue
        name_file, energy_file = path / "name", path / "energy_uj"
        try:
            if name_file.read_text().strip().startswith("package"):
                int(energy_file.read_text())
                domains.append(path)
        except (OSError, ValueError):
            continue
    return domains


class RaplEnergy:
    """CPU package energy from /sys/class/powercap (Intel RAPL, also on AMD Zen)."""

    name = "rapl"
    uncertainty_pct = RAPL_UNCERTAINTY_PCT
    method = (
        "RAPL package-domain energy counters (/sys/class/powercap): the whole CPU package, "
        f"{SHARED_DEVICE_NOTE}; ±{RAPL_UNCERTAINTY_PCT:.0f}% (RAPL is the CPU's own model)"
    )

    def __init__(self, domains: list[Path] | None = None) -> None:
        self._domains = domains if domains is not None else rapl_package_domains()
        if not self._domains:
            raise RuntimeError("no readable RAPL package domain")
        self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in self._domains]

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self._domains]

    def start(self) -> tuple[float, list[int]]:
        return time.perf_counter(), self._read()

    def stop(self, token: tuple[float, list[int]]) -> EnergyReading:
        start_time, start_uj = token
        total_uj = 0
        for before, after, wrap in zip(start_uj, self._read(), self._ranges, strict=True):
            total_uj += after - before if after >= before else after + wrap - before
        return EnergyReading(
            total_uj / 1e6,
            time.perf_counter() - start_time,
            self.name,
            self.uncertainty_pct,
            self.method,
        )


class EstimatedEnergy:
    """A stated model when no counter is readable: busy core-seconds and resident memory.

    energy = process CPU seconds × WATTS_PER_BUSY_CORE + resident GB × WATTS_PER_GB × seconds.
    It counts this process only (all its threads) and no idle or platform power.
    """

    name = "estimate"
    uncertainty_pct = ESTIMATE_UNCERTAINTY_PCT
    method = (
        f"estimated: {WATTS_PER_BUSY_CORE} W per busy core (process CPU time) + "
        f"{WATTS_PER_GB_RESIDENT} W per GB resident memory (Cloud Carbon Footprint coefficients), "
        f"±{ESTIMATE_UNCERTAINTY_PCT:.0f}%"
    )

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def start(self) -> tuple[float, float]:
        return time.perf_counter(), self._cpu_seconds()

    def stop(self, token: tuple[float, float]) -> EnergyReading:
        start_time, start_cpu = token
        duration = time.perf_counter() - start_time
        cpu_seconds = self._cpu_seconds() - start_cpu
        resident_gb = self._process.memory_info().rss / 1e9
        energy = cpu_seconds * WATTS_PER_BUSY_CORE + resident_gb * WATTS_PER_GB_RESIDENT * duration
        return EnergyReading(energy, duration, self.name, self.uncertainty_pct, self.method)


def detect_energy_source(device: str = "cpu") -> EnergySource:
    """The best source for `device`: NVML on CUDA, RAPL on CPU when readable, else the estimate.

    `WATTWISE_ENERGY_SOURCE=estimate` forces the estimate (useful to compare runs across machines).
    """
    forced = os.environ.get("WATTWISE_ENERGY_SOURCE", "").strip().lower()
    if forced == "estimate":
        return EstimatedEnergy()
    if device.startswith("cuda"):
        try:
            return NvmlEnergy()
        except Exception:  # noqa: BLE001 - any NVML failure means: not available here
            pass
    else:
        try:
            return RaplEnergy()
        except (RuntimeError, OSError, ValueError):
            pass
    return EstimatedEnergy()


def format_energy(value_j: float, reading_source: str, uncertainty_pct: float) -> str:
    """A human figure that never hides an estimate: '12.3 J (estimated ±60%)'."""
    text = f"{value_j:.4g} J"
    if reading_source == "estimate":
        return f"{text} (estimated ±{uncertainty_pct:.0f}%)"
    return f"{text} (measured, {measured_scope(reading_source, uncertainty_pct)})"


def measured_scope(reading_source: str, uncertainty_pct: float) -> str:
    """'rapl ±10%, whole package, shared' for a hardware counter's figure."""
    scope = "whole device" if reading_source == "nvml" else "whole package"
    return f"{reading_source} ±{uncertainty_pct:.0f}%, {scope}, shared"
