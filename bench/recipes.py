"""Cross-library recipes side by side on MiniLM (batch 32, 128 real tokens): fp32 eager, ONNX
Runtime fp32 with each exporter, int8 per-channel, transformer fusion + int8, selective
per-tensor int8, SmoothQuant + per-tensor int8, torchao int8 + inductor (freezing), and bf16 +
inductor.

    .venv/bin/python bench/recipes.py                      # this CPU's own ISA
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python bench/recipes.py
                                                            # PyTorch limited to AVX2

The second line limits PyTorch's kernels (ATen, oneDNN) to AVX2; ONNX Runtime's own MLAS
kernels ignore both variables and still use AVX-512/VNNI: say so next to any figure.

Each recipe is compressed by wattwise (the same steps `wattwise compress` runs), then all are
timed interleaved in rounds (one batch each per round, order rotated) so host drift hits every
one alike: the ratio to fp32 eager comes from medians in the same run. Fidelity: mean cosine to
fp32 eager's embeddings over 64 inputs (the timing batch from val and 32 from test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore")
os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.compress.pipeline import run_recipe  # noqa: E402
from wattwise.compress.recipe import Recipe  # noqa: E402
from wattwise.compress.variant import save_variant  # noqa: E402
from wattwise.models.registry import load_model  # noqa: E402

TS = {"name": "onnxruntime", "exporter": "torchscript"}
PER_TENSOR = {"quantize": {"method": "int8_dynamic", "granularity": "per_tensor"}}
# What optimize's planned candidate runs: micro-batches of 256 tokens on one single-threaded
# session per core, without ORT's SkipLayerNormFusion (search/defaults.py).
PLANNED = {
    **TS,
    "disabled_optimizers": ["SkipLayerNormFusion"],
    "micro_batch_tokens": 256,
    "streams": max(1, torch.get_num_threads()),
}
RECIPES: dict[str, dict] = {
    "ORT fp32 (dynamo export)": {"steps": [], "backend": "onnxruntime"},
    "ORT fp32 (TorchScript export)": {"steps": [], "backend": TS},
    "ORT int8 per-channel (dynamo)": {
        "steps": [{"quantize": {"method": "int8_dynamic"}}],
        "backend": "onnxruntime",
    },
    "ORT int8 per-channel (TorchScript)": {
        "steps": [{"quantize": {"method": "int8_dynamic"}}],
        "backend": TS,
    },
    "ORT int8 per-tensor (TorchScript)": {"steps": [PER_TENSOR], "backend": TS},
    "fusion + ORT int8 per-channel": {
        "steps": [
            {"fuse": {"method": "onnxruntime_transformer"}},
            {"quantize": {"method": "int8_dynamic"}},
        ],
        "backend": TS,
    },
    "fusion + ORT int8 per-channel, plan, no SkipLN": {
        "steps": [
            {"fuse": {"method": "onnxruntime_transformer"}},
            {"quantize": {"method": "int8_dynamic"}},
        ],
        "backend": PLANNED,
    },
    "fusion (FastGelu) + ORT int8 per-channel, plan, no SkipLN": {
        "steps": [
            {"fuse": {"method": "onnxruntime_transformer", "gelu_approximation": True}},
            {"quantize": {"method": "int8_dynamic"}},
        ],
        "backend": PLANNED,
    },
    "fusion + ORT int8 per-tensor": {
        "steps": [{"fuse": {"method": "onnxruntime_transformer"}}, PER_TENSOR],
        "backend": TS,
    },
    "selective per-tensor int8 (≥0.995 calib.)": {
        "steps": [
            {
                "quantize": {
                    "method": "int8_selective",
                    "min_fidelity": 0.995,
                    "calibration_samples": 16,
                }
            }
        ],
        "backend": TS,
    },
    "SmoothQuant α0.5 + ORT int8 per-tensor": {
        "steps": [{"smooth": {"method": "smoothquant", "alpha": 0.5}}, PER_TENSOR],
        "backend": TS,
    },
    "SmoothQuant α0.5 + selective per-tensor int8": {
        "steps": [
            {"smooth": {"method": "smoothquant", "alpha": 0.5}},
            {"quantize": {"method": "int8_selective", "min_fidelity": 0.995}},
        ],
        "backend": TS,
    },
    "torchao int8 + inductor (freezing)": {
        "steps": [
            {
                "quantize": {
                    "method": "int8_dynamic",
                    "granularity": "per_channel",
                    "implementation": "torchao",
                }
            }
        ],
        "backend": "torch_compile",
    },
    "bf16 + inductor (freezing)": {
        "steps": [{"cast": {"method": "bf16"}}],
        "backend": "torch_compile",
    },
}


def mean_cosine(outputs: torch.Tensor, reference: torch.Tensor) -> float:
    return float(F.cosine_similarity(outputs.double(), reference.double(), dim=1).mean())


def isa_facts() -> dict:
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "cpu_flags": sorted(
            flags
            & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"}
        ),
        "threads": torch.get_num_threads(),
    }


def build(loaded, recipe_dict: dict, root: str, name: str):
    """Compress with wattwise (no profile); returns (runnable module, saved recipe, seconds)."""
    recipe = Recipe.from_dict(recipe_dict)
    started = time.perf_counter()
    run = run_recipe(loaded, recipe, measure_steps=False, show_progress=False)
    directory = os.path.join(root, f"v{len(os.listdir(root))}")
    variant = save_variant(run, recipe, directory, (32,), show_progress=False, profile=False)
    from wattwise.compress.variant import load_variant

    module = load_variant(directory).module
    return module, variant.manifest, time.perf_counter() - started, recipe.libraries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated substrings of recipe names")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model("minilm")
    inputs = loaded.task.example_inputs(32, "val")
    check = loaded.task.example_inputs(32, "test")
    eager = loaded.module.eval()
    with torch.inference_mode():
        reference = torch.cat([eager(*inputs), eager(*check)])
    chosen = {
        k: v
        for k, v in RECIPES.items()
        if not args.only or any(s.strip() in k for s in args.only.split(","))
    }
    runners = {"fp32 eager (original)": (eager, None, 0.0, ("torch",))}
    root = tempfile.mkdtemp(prefix="wattwise-bench-recipes-")
    for name, recipe in chosen.items():
        print(f"building: {name}", file=sys.stderr, flush=True)
        try:
            runners[name] = build(loaded, recipe, root, name)
        except Exception as error:  # noqa: BLE001 - one broken recipe must not end the bench
            print(f"  failed: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)
    results = {}
    with torch.inference_mode():
        for name, (module, *_rest) in runners.items():
            started = time.perf_counter()
            module(*inputs), module(*inputs)  # warm-up (and compilation)
            outputs = torch.cat([module(*inputs), module(*check)]).float()
            results[name] = {
                "fidelity": mean_cosine(outputs, reference),
                "warmup_s": time.perf_counter() - started,
                "times_s": [],
            }
            print(
                f"  {name}: fidelity {results[name]['fidelity']:.4f}", file=sys.stderr, flush=True
            )
        names = list(runners)
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr, flush=True)
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                module = runners[name][0]
                started = time.perf_counter()
                module(*inputs)
                results[name]["times_s"].append(time.perf_counter() - started)
            report(results, runners, args)


def report(results: dict, runners: dict, args) -> None:
    """Print the table (and write the JSON) from the rounds timed so far."""
    base = statistics.median(results["fp32 eager (original)"]["times_s"])
    rows = []
    for name, entry in results.items():
        times = entry["times_s"]
        median = statistics.median(times)
        ratios = sorted(
            e / t for e, t in zip(results["fp32 eager (original)"]["times_s"], times, strict=True)
        )
        _module, manifest, build_s, libraries = runners[name]
        metrics = (manifest or {}).get("backend_manifest", {}).get("deferred_step_metrics", [])
        rows.append(
            {
                "recipe": name,
                "libraries": list(libraries),
                "samples_per_s": 32 / median,
                "x_fp32_eager": base / median,
                "x_per_round_min_max": [ratios[0], ratios[-1]],
                "fidelity": entry["fidelity"],
                "build_s": build_s,
                "saved_recipe": (manifest or {}).get("recipe"),
                "step_metrics": [
                    {k: v for k, v in m.items() if k != "sensitivity"} for m in metrics
                ],
            }
        )
    facts = isa_facts()
    print(f"\nISA: {json.dumps(facts)}; rounds: {args.rounds}; batch 32 × 128 tokens\n")
    print("| recipe | libraries | samples/s | × fp32 eager (min–max per round) | fidelity (cos) |")
    print("|---|---|---|---|---|")
    for row in rows:
        low, high = row["x_per_round_min_max"]
        print(
            f"| {row['recipe']} | {', '.join(row['libraries'])} | {row['samples_per_s']:.1f} | "
            f"{row['x_fp32_eager']:.2f} ({low:.2f}–{high:.2f}) | {row['fidelity']:.4f} |"
        )
    for row in rows:
        for metric in row["step_metrics"]:
            if "keep_fp32" in metric or "fused_operators" in metric:
                shown = {
                    k: metric[k]
                    for k in ("step", "keep_fp32", "fused_operators", "calibration_fidelity")
                    if k in metric
                }
                print(f"{row['recipe']}: {json.dumps(shown)}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"isa": facts, "rows": rows}, handle, indent=2, default=str)


if __name__ == "__main__":
    main()
