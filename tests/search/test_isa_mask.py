"""bench/as_avx2.sh: a process under it sees an AVX2-only CPU, and real crashes still crash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AS_AVX2 = Path(__file__).resolve().parents[2] / "bench" / "as_avx2.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None
    or not Path("/proc/cpuinfo").exists()
    or "cpuid_fault" not in Path("/proc/cpuinfo").read_text().split(),
    reason="masking the ISA needs gcc and a CPU with CPUID faulting (flag cpuid_fault)",
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(AS_AVX2), sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )


def test_torch_onnxruntime_and_wattwise_see_avx2_only():
    code = (
        "import faulthandler; faulthandler.enable()\n"
        "import torch, onnxruntime\n"
        "from wattwise.search.machine import machine_info\n"
        "flags = machine_info().isa_flags\n"
        "print(torch.backends.cpu.get_cpu_capability(), torch.cpu._is_avx512_supported(),\n"
        "      torch.cpu._is_vnni_supported(), torch.cpu._is_avx512_bf16_supported(),\n"
        "      'avx2' in flags, any('512' in f or 'vnni' in f or 'amx' in f for f in flags))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AVX2", "False", "False", "False", "True", "False"]


def test_a_real_segfault_still_kills_the_process():
    done = _run("import ctypes; ctypes.string_at(0)")
    assert done.returncode == -11, (done.returncode, done.stderr)
