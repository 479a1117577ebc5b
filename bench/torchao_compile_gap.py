"""Why torchao int8 + inductor ran 72.8 samples/s inside the search and 216 by hand (MiniLM,
batch 32, 128 tokens, 2 cores; docs/benchmarks.md): one compiled model, timed interleaved under
the conditions the search adds, so each suspect's effect shows as a ratio in one run.

    .venv/bin/python bench/torchao_compile_gap.py --rounds 6

Suspects timed against plain calls of the same compiled module:
- `sampler`: inside `track_peak_memory` (the profile's RSS sampler thread wakes every 2 ms; on
  2 cores it can preempt one of the two OpenMP threads of every parallel region);
- `after varied lengths`: the same module after calls at other sequence lengths (dynamo's
  automatic dynamic shapes then recompiles the graph with a symbolic sequence axis, as the
  profile's quality pass over padded-to-longest batches would cause for a later compile of the
  same code object);
- `batch 2 first`: a second compiled copy whose first call is at batch 2 (the variant probe's
  batch, which ran before the profile until 2026-11-23), then timed at batch 32: dynamo then
  recompiles with a symbolic batch axis.
Run it on a quiet machine: under heavy contention every variant is preempted alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="wattwise-gap-"))

from wattwise.measure.memory import track_peak_memory  # noqa: E402
from wattwise.models.registry import load_model  # noqa: E402


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    import torch._inductor.config as inductor_config
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, PerRow, quantize_

    inductor_config.freezing = True
    loaded = load_model("minilm")
    inputs = loaded.task.example_inputs(32, "val")
    module = loaded.module.eval()
    quantize_(module, Int8DynamicActivationInt8WeightConfig(granularity=PerRow()))
    compiled = torch.compile(module, backend="inductor")
    times: dict[str, list[float]] = {"plain": [], "sampler": []}
    with torch.inference_mode():
        print(f"compile + first call: {timed(lambda: compiled(*inputs)):.1f} s", flush=True)
        compiled(*inputs)
        for _ in range(args.rounds):
            times["plain"].append(timed(lambda: compiled(*inputs)))
            with track_peak_memory("cpu"):
                times["sampler"].append(timed(lambda: compiled(*inputs)))
        # Other lengths: the recompile marks the sequence axis dynamic; time 128 tokens again.
        for length in (96, 64):
            compiled(*(t[:, :length] for t in inputs))
        times["after varied lengths"] = [
            timed(lambda: compiled(*inputs)) for _ in range(args.rounds)
        ]
        torch._dynamo.reset()
        second = torch.compile(module, backend="inductor")
        second(*(t[:2] for t in inputs))
        second(*inputs)
        second(*inputs)
        times["batch 2 first"] = [timed(lambda: second(*inputs)) for _ in range(args.rounds)]
    base = statistics.median(times["plain"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name}: {32 / median:.1f} samples/s ({base / median:.2f}x plain)")


if __name__ == "__main__":
    main()
