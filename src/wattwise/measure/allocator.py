"""A steady glibc allocator for timing: fixed mmap and trim thresholds in this process.

Why: glibc adapts its mmap threshold to the history of frees and gives the heap's top back to
the OS past a trim threshold, so the same large activation tensor comes from fresh pages on some
calls and not on others. Measured in one process (fp32 MiniLM, batch 32 × 128): 5k–52k page
faults per call depending on what ran before, calls 449–566 ms; with both thresholds fixed,
0–3.7k faults, 465–493 ms. A search times many different models in one process, so its
figures carried that history. glibc has no switch for this except `mallopt`.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD_BYTES = 2**30


def steady_allocator() -> str:
    """Fix glibc malloc's mmap and trim thresholds for this process.

    Returns a note for the report, or "" where the C library is not glibc (nothing changed).
    Memory freed at the heap's top is kept up to 1 GiB instead of being returned to the OS.
    """
    if platform.system() != "Linux":
        return ""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return ""
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        return ""
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        return ""
    return (
        "glibc malloc thresholds fixed for timing (mmap 32 MiB, trim 1 GiB): allocations do "
        "not depend on what ran before in the process"
    )
