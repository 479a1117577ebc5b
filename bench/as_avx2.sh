#!/bin/sh
# Run a command as on an AVX2-only CPU (no AVX-512, VNNI, BF16 or AMX), on this host:
#   bench/as_avx2.sh .venv/bin/python bench/optimize.py
# CPUID and /proc/cpuinfo are masked by isa_mask/libisamask.so (built here on first use, see
# isa_mask/isa_mask.c), so PyTorch, oneDNN, fbgemm, MKL and ONNX Runtime's MLAS all pick their
# AVX2 kernels. Needs a CPU and kernel with CPUID faulting (the cpuid_fault flag).
set -e
here=$(cd "$(dirname "$0")" && pwd)
lib="$here/isa_mask/libisamask.so"
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "as_avx2: this CPU has no cpuid_fault flag, so its ISA cannot be masked; run on a real AVX2-only machine" >&2
    exit 2
fi
if [ ! -f "$lib" ] || [ "$here/isa_mask/isa_mask.c" -nt "$lib" ]; then
    command -v gcc >/dev/null || { echo "as_avx2: needs gcc to build isa_mask/libisamask.so; install gcc" >&2; exit 2; }
    gcc -O2 -Wall -shared -fPIC -o "$lib.tmp" "$here/isa_mask/isa_mask.c" -ldl
    mv "$lib.tmp" "$lib"
fi
LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2
GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512DQ,-AVX512CD,-AVX512BW,-AVX512VL
# Inductor's cache (torch.compile) does not key its kernels on the vector ISA: AVX-512 kernels
# cached by an unmasked run were reused here with AVX2's 8-lane vectors and segfaulted
# (torch 2.13, `generate --compile`). A cache of its own keeps the two apart.
TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/torchinductor_$(id -u)_avx2}"
export LD_PRELOAD ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA GLIBC_TUNABLES TORCHINDUCTOR_CACHE_DIR
exec "$@"
