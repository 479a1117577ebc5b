"""measure.allocator: with glibc's thresholds fixed, freed 30 MB buffers are reused, not
re-faulted from the OS (the page-fault churn that made fp32 timings depend on history)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="glibc mallopt is Linux")

PROBE = """
import resource, sys
import numpy as np
from wattwise.measure.allocator import steady_allocator
note = steady_allocator() if sys.argv[1] == "steady" else "default"
def touch():  # two live 30 MB buffers, as a forward pass holds several activations
    buffers = [np.empty(30 * 2**20, dtype=np.uint8) for _ in range(2)]
    for buffer in buffers:
        buffer[::4096] = 1
    del buffers
touch(); touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
print(bool(note), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    noted, faults = done.stdout.split()
    return noted == "True", int(faults)


def test_freed_buffers_are_reused_without_page_faults():
    noted, faults = _faults("steady")
    if not noted:
        pytest.skip("the C library is not glibc: steady_allocator changes nothing")
    assert faults < 500  # 30 MB in 4 KiB pages is 7,680 faults per fresh buffer
    # glibc's defaults give the heap's top back and fault it in again on every round
    assert _faults("default")[1] > 1000
