"""The machine a search ran on: CPU model, cores, ISA flags, GPU, library versions."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "avx512_bf16",
    "fma",
)


@dataclass
class MachineInfo:
    """What the measurements depend on."""

    cpu_model: str
    logical_cores: int
    isa_flags: list[str]
    gpu: str
    python: str
    platform: str
    versions: dict[str, str] = field(default_factory=dict)
    allocator: str = ""  # measure.allocator's note, when the search fixed glibc's thresholds

    @property
    def has_int8_dot_product(self) -> bool:
        """VNNI or AMX: int8 matmuls that beat fp32 on CPU."""
        return any(f in self.isa_flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    def to_dict(self) -> dict:
        """Plain dict for reports."""
        return asdict(self)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key == "flags" and not flags:
                flags = value.split()
    return model, [f for f in ISA_FLAGS if f in flags]


def machine_info() -> MachineInfo:
    """Read the current machine."""
    import torch

    from wattwise.compress.variant import library_versions

    model, flags = _cpuinfo()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return MachineInfo(
        model,
        os.cpu_count() or 1,
        flags,
        gpu,
        platform.python_version(),
        platform.platform(),
        library_versions(),
    )
