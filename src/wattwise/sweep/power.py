"""NVIDIA GPU power limits through NVML, always put back.

`PowerLimits` records every GPU's limit before the first change, in memory and in a journal
file, and restores them on exit from its `with` block: normal end, exception, Ctrl-C or
SIGTERM (turned into KeyboardInterrupt). A sweep killed with SIGKILL cannot run any code; the
journal it leaves is replayed by the next `PowerLimits` (or `restore_from_journal()`) before
it changes anything.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from wattwise.errors import UnsupportedOnDeviceError
from wattwise.paths import atomic_write_text, cache_dir

JOURNAL_NAME = "gpu_power_limits_journal.json"


def journal_path() -> Path:
    """Where the original limits wait while a sweep changes them."""
    return cache_dir() / JOURNAL_NAME


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as error:
        raise UnsupportedOnDeviceError(
            f"NVML is not available here ({error}); power-limit sweeps need an NVIDIA GPU"
        ) from error
    return pynvml


def gpu_max_watts(index: int = 0) -> float:
    """The highest power limit GPU `index` accepts (W): Zeus's MAXPOWER."""
    nvml = _nvml()
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    return nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)[1] / 1000.0


def restore_from_journal() -> list[int]:
    """Put back limits a killed sweep left changed; returns the GPU indices restored."""
    path = journal_path()
    if not path.is_file():
        return []
    nvml = _nvml()
    saved = {int(k): int(v) for k, v in json.loads(path.read_text()).items()}
    for index, milliwatts in saved.items():
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        nvml.nvmlDeviceSetPowerManagementLimit(handle, milliwatts)
    path.unlink()
    return sorted(saved)


class PowerLimits:
    """Set power limits on GPU `index`; restore every original limit on exit.

    Example:
        with PowerLimits(0) as limits:
            limits.set_watts(250); run(); limits.set_watts(300); run()
    """

    def __init__(self, index: int = 0) -> None:
        self.index = index
        self._nvml = _nvml()
        self._handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
        low, high = self._nvml.nvmlDeviceGetPowerManagementLimitConstraints(self._handle)
        self.min_watts, self.max_watts = low / 1000.0, high / 1000.0
        self._original_mw: int | None = None
        self._previous_handler = None

    def __enter__(self) -> PowerLimits:
        restore_from_journal()
        self._original_mw = int(self._nvml.nvmlDeviceGetPowerManagementLimit(self._handle))
        try:  # the right to change limits, checked by setting the current one
            self._nvml.nvmlDeviceSetPowerManagementLimit(self._handle, self._original_mw)
        except self._nvml.NVMLError as error:
            raise UnsupportedOnDeviceError(
                f"cannot change GPU {self.index}'s power limit ({error}): it needs root or "
                "administrator rights; run the sweep without --power-limits, or as root"
            ) from error
        atomic_write_text(journal_path(), json.dumps({str(self.index): self._original_mw}))
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def set_watts(self, watts: float) -> None:
        """Set the limit (W), within the GPU's allowed range."""
        if not self.min_watts <= watts <= self.max_watts:
            raise UnsupportedOnDeviceError(
                f"power limit {watts:g} W is outside GPU {self.index}'s range "
                f"{self.min_watts:g}-{self.max_watts:g} W; choose limits in that range"
            )
        self._nvml.nvmlDeviceSetPowerManagementLimit(self._handle, round(watts * 1000))

    def current_watts(self) -> float:
        """The limit in force now (W)."""
        return self._nvml.nvmlDeviceGetPowerManagementLimit(self._handle) / 1000.0

    def __exit__(self, *exc_info) -> None:
        try:
            if self._original_mw is not None:
                self._nvml.nvmlDeviceSetPowerManagementLimit(self._handle, self._original_mw)
                journal_path().unlink(missing_ok=True)
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
