"""Pruning and distillation: structured sparsity and layer dropping, each without and with
distillation, then int8, against fp32 eager, on digits-cnn and minilm, in one run.

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/prune.py

Variants: structured pruning at 30/50/70% (both models) and 2/3/4 dropped layers (minilm's
encoder; digits-cnn has none), each as pruned and as pruned + distilled (the student is cached
and reused for its int8 row), then every distilled student quantized int8 dynamic per-channel
by ONNX Runtime; plus ONNX Runtime int8 of the unpruned model as the "int8 alone" baseline, and
50% unstructured magnitude pruning, which dense kernels run no faster (its row says what the
weights would take stored sparse).
Throughput: samples/s from the fastest of 4 timed forwards (digits-cnn batch 64; minilm batch
32, every input padded to 128 tokens), best of 3 rounds in which all of a model's variants are
timed in turn, same process, torch's and ONNX Runtime's default threads (2 here). The fastest
run, not the median: on a shared 2-core machine another process's burst stalls a 2-thread
OpenMP forward by whole scheduler slices (digits-cnn: median 130 ms, fastest 2.6 ms under
load), which says nothing about the model.
Quality on the held-out test split: digits accuracy; minilm recall@10 (and mean cosine to fp32
embeddings). FLOPs: torch's flop counter on the PyTorch model, per sample. Size: safetensors
bytes (eager) or the .onnx file. Budget: under 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.backends.base import get_backend  # noqa: E402
from wattwise.compress.pipeline import run_recipe  # noqa: E402
from wattwise.compress.recipe import BackendSpec, Recipe  # noqa: E402
from wattwise.compress.steps.base import parse_step  # noqa: E402
from wattwise.measure.flops import count_flops  # noqa: E402
from wattwise.measure.latency import TimingSettings, time_forward  # noqa: E402
from wattwise.measure.size import parameter_count, serialized_size_bytes  # noqa: E402
from wattwise.models.registry import load_model  # noqa: E402

TIMING = TimingSettings(1, 0.0, 4, 0.0, 4, 6.0)
ROUNDS = 3
BATCH = {"digits-cnn": 64, "minilm": 32}
METRIC = {"digits-cnn": "accuracy", "minilm": "recall@10"}
INT8 = {"quantize": {"method": "int8_dynamic", "granularity": "per_channel"}}


@dataclasses.dataclass
class Row:
    """One measured model: what it is and what it costs."""

    model: str
    variant: str
    distilled: str
    int8: bool
    parameters: int
    flops_per_sample: int | None
    size_bytes: int
    quality: dict[str, float]
    seconds: float
    module: torch.nn.Module = dataclasses.field(repr=False)
    samples_per_s: float = 0.0


def throughput(module, inputs) -> float:
    """Samples per second from the fastest timed forward of this round."""
    with torch.inference_mode():
        samples_ms = time_forward(lambda: module(*inputs), TIMING)
    return inputs[0].shape[0] / (min(samples_ms) / 1000)


def measure(loaded, module, label, distilled, int8, flops_module, size_bytes, started) -> Row:
    """Everything but throughput, which `time_rounds` measures for all rows together."""
    quality = loaded.task.evaluate(module, "test").metrics
    row = Row(
        loaded.name,
        label,
        distilled,
        int8,
        parameter_count(flops_module),
        count_flops(flops_module, loaded.task.example_inputs(1, "test")),
        size_bytes,
        quality,
        time.perf_counter() - started,
        module,
    )
    print(f"  {describe(row)} ({row.seconds:.0f} s)", file=sys.stderr, flush=True)
    return row


def time_rounds(loaded, rows: list[Row], rounds: int) -> None:
    """Time every row once per round, rows interleaved, keeping each row's best round: load
    from other processes then lands on all variants alike instead of on whichever ran during
    it."""
    inputs = loaded.task.example_inputs(BATCH[loaded.name], "test")
    for _ in range(rounds):
        for row in rows:
            row.samples_per_s = max(row.samples_per_s, throughput(row.module, inputs))


def describe(row: Row) -> str:
    quality = ", ".join(f"{k} {v:.4f}" for k, v in row.quality.items())
    int8 = " + int8" if row.int8 else ""
    return f"{row.variant}{int8} (distilled: {row.distilled}): {quality}"


def eager_run(loaded, steps: list[dict]):
    recipe = Recipe.from_dict({"steps": steps, "backend": "eager"})
    return run_recipe(loaded, recipe, measure_steps=False, show_progress=False)


def int8_row(loaded, run, label, distilled, workdir: Path) -> Row:
    """Export `run.module` through ONNX Runtime with int8 dynamic per-channel quantization."""
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(dir=workdir))
    context = dataclasses.replace(run.context, backend=BackendSpec(name="onnxruntime"))
    exported = get_backend("onnxruntime").export(run.module, context, [parse_step(INT8)], directory)
    size = sum((directory / name).stat().st_size for name in exported.files if "onnx" in name)
    return measure(loaded, exported.module, label, distilled, True, run.module, size, started)


def eager_row(loaded, run, label, distilled, started) -> Row:
    module = run.module.eval()
    size = serialized_size_bytes(module)
    return measure(loaded, module, label, distilled, False, module, size, started)


def bench_model(name: str, variants, distill: dict, workdir: Path) -> list[Row]:
    loaded = load_model(name)
    print(f"{name}:", file=sys.stderr, flush=True)
    started = time.perf_counter()
    base = eager_run(loaded, [])
    rows = [eager_row(loaded, base, "fp32", "-", started)]
    rows.append(int8_row(loaded, base, "fp32", "-", workdir))
    started = time.perf_counter()
    sparse = eager_run(loaded, [{"prune": {"method": "unstructured", "sparsity": 0.5}}])
    stored = sparse.reports[0].metrics["sparse_weight_bytes"] / 1e6
    label = f"unstructured 50% ({stored:.2f} MB stored sparse)"
    rows.append(eager_row(loaded, sparse, label, "no", started))
    for label, step in variants:
        started = time.perf_counter()
        rows.append(eager_row(loaded, eager_run(loaded, [step]), label, "no", started))
        started = time.perf_counter()
        student = eager_run(loaded, [step, {"distill": distill}])  # cached for its int8 row
        steps = distill["steps"]
        rows.append(eager_row(loaded, student, label, f"{steps} steps", started))
        rows.append(int8_row(loaded, student, label, f"{steps} steps", workdir))
    time_rounds(loaded, rows, ROUNDS)
    return rows


def table(rows: list[Row]) -> str:
    header = (
        "| model | variant | distilled | int8 (ORT) | params | MFLOP/sample | size MB | "
        "samples/s | × fp32 eager | quality (test) | Δ vs fp32 (points) |"
    )
    lines = [header, "|" + "---|" * 11]
    base = {r.model: r for r in rows if r.variant == "fp32" and not r.int8}
    for row in rows:
        reference = base[row.model]
        metric = METRIC[row.model]
        quality = ", ".join(f"{k} {v:.3f}" for k, v in row.quality.items())
        delta = 100 * (row.quality[metric] - reference.quality[metric])
        flops = f"{row.flops_per_sample / 1e6:.1f}" if row.flops_per_sample else "n/a"
        lines.append(
            f"| {row.model} | {row.variant} | {row.distilled} | {'yes' if row.int8 else 'no'} | "
            f"{row.parameters / 1e6:.2f}M | {flops} | {row.size_bytes / 1e6:.2f} | "
            f"{row.samples_per_s:.1f} | {row.samples_per_s / reference.samples_per_s:.2f}x | "
            f"{quality} | {delta:+.1f} {metric} |"
        )
    return "\n".join(lines)


def targets(rows: list[Row]) -> str:
    """The two published targets, met or missed by how much."""
    lines = []
    digits = [r for r in rows if r.model == "digits-cnn"]
    if digits:
        base = digits[0]
        hit = next(
            r
            for r in digits
            if r.variant == "structured 50%" and r.distilled != "no" and not r.int8
        )
        delta = 100 * (hit.quality["accuracy"] - base.quality["accuracy"])
        speed = hit.samples_per_s / base.samples_per_s
        verdict = "met" if delta >= -1 and speed >= 1.7 else "MISSED"
        lines.append(
            f"- digits-cnn, structured 50% + distillation: accuracy {delta:+.1f} points "
            f"(target ≥ −1), {speed:.2f}x batch-64 throughput (target ≥ 1.7x): {verdict}"
        )
    minilm = [r for r in rows if r.model == "minilm"]
    if minilm:
        base = minilm[0]
        int8_alone = next(r for r in minilm if r.variant == "fp32" and r.int8)
        within = [
            r
            for r in minilm
            if r.int8 and r.quality["recall@10"] >= base.quality["recall@10"] - 0.01
        ]
        fastest = max((r for r in minilm if r.int8), key=lambda r: r.samples_per_s)
        alone = int8_alone.samples_per_s / base.samples_per_s
        lines.append(f"- minilm, int8 alone (ORT per-channel): {alone:.2f}x fp32 eager")
        if within:
            best = max(within, key=lambda r: r.samples_per_s)
            speed = best.samples_per_s / base.samples_per_s
            verdict = "met" if speed >= 5 else f"MISSED by {5 - speed:.2f}x"
            beyond = best.samples_per_s / int8_alone.samples_per_s
            lines.append(
                f"- minilm, fastest int8 variant within 1 recall@10 point: {best.variant} "
                f"({best.distilled}): {speed:.2f}x fp32 eager (target ≥ 5x): {verdict}; "
                f"{beyond:.2f}x int8 alone (the issue's ≥ 1.4x beyond int8)"
            )
        else:
            lines.append("- minilm: no pruned int8 variant stays within 1 recall@10 point: MISSED")
        speed = fastest.samples_per_s / base.samples_per_s
        delta = 100 * (fastest.quality["recall@10"] - base.quality["recall@10"])
        lines.append(
            f"- minilm, fastest int8 variant: {fastest.variant} ({fastest.distilled}): "
            f"{speed:.2f}x, recall@10 {delta:+.1f} points"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits-cnn,minilm")
    parser.add_argument("--digits-distill-steps", type=int, default=300)
    parser.add_argument("--minilm-distill-steps", type=int, default=100)
    parser.add_argument("--minilm-learning-rate", type=float, default=2e-4)
    args = parser.parse_args()
    started = time.perf_counter()
    structured = [
        (f"structured {p}%", {"prune": {"method": "structured", "sparsity": p / 100}})
        for p in (30, 50, 70)
    ]
    dropped = [(f"drop {d} of 6 layers", {"drop_layers": {"keep": 6 - d}}) for d in (2, 3, 4)]
    plans = {
        "digits-cnn": (structured, {"steps": args.digits_distill_steps}),
        "minilm": (
            structured + dropped,
            {"steps": args.minilm_distill_steps, "learning_rate": args.minilm_learning_rate},
        ),
    }
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="wattwise-bench-prune-") as workdir:
        for name in args.models.split(","):
            variants, distill = plans[name]
            rows += bench_model(name, variants, distill, Path(workdir))
    print(table(rows))
    print()
    print(targets(rows))
    print(
        f"\n(one run, {time.perf_counter() - started:.0f} s on {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
