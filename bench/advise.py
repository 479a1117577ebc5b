"""What each `wattwise advise` smell costs: the smell vs its fix, measured on built-in models.

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/advise.py [--rounds 3] [--json out.json]

For every rule that a CPU can show, the smell and its fix do the same useful work (same
inputs, same number of samples or training steps); they run interleaved (smell, fix, smell,
fix, ...) for `--rounds` rounds in one process, one intra-op thread (on the shared 2-core
machine two OpenMP threads stall each other by whole scheduler slices), and the table gives
the ratio smell ÷ fix of the median energy and median wall time. Energy comes from the best
source here (`detect_energy_source`): on the development machines that is the estimate
(process CPU time × 3.5 W + memory), ±60% in absolute terms; a ratio of two estimates on the
same machine is steadier than that, but it still only sees this process's CPU time.
Rules a CPU cannot show (pinned memory, GPU bf16) are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable

import psutil
import torch
from torch import nn

warnings.filterwarnings("ignore")
os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.measure.energy import detect_energy_source  # noqa: E402
from wattwise.models.digits import DigitsCNN  # noqa: E402
from wattwise.models.registry import load_model  # noqa: E402

SOURCE = detect_energy_source("cpu")


def measure(work: Callable[[], object]) -> tuple[float, float]:
    """(joules, seconds) of one call of `work`."""
    token = SOURCE.start()
    work()
    reading = SOURCE.stop(token)
    return reading.energy_j, reading.duration_s


def compare(smell: Callable[[], object], fix: Callable[[], object], rounds: int) -> dict:
    """Interleaved rounds; medians and smell ÷ fix ratios."""
    smell(), fix()  # warm-up: allocator, caches, lazy initialisation
    runs = {"smell": [], "fix": []}
    for _ in range(rounds):
        runs["smell"].append(measure(smell))
        runs["fix"].append(measure(fix))
    medians = {k: (statistics.median(e for e, _ in v), statistics.median(t for _, t in v))
               for k, v in runs.items()}  # fmt: skip
    return {
        "smell_j": medians["smell"][0],
        "fix_j": medians["fix"][0],
        "energy_ratio": medians["smell"][0] / medians["fix"][0],
        "time_ratio": medians["smell"][1] / medians["fix"][1],
    }


def digits():
    loaded = load_model("digits-cnn")
    return loaded.module.eval(), loaded.task.example_inputs(256)[0]


def rule_ww101(rounds):
    model, images = digits()

    def smell():
        for _ in range(20):
            model(images[:64])

    def fix():
        with torch.inference_mode():
            for _ in range(20):
                model(images[:64])

    return compare(smell, fix, rounds), "digits-cnn, 20 forwards of batch 64"


def rule_ww102(rounds):
    loaded = load_model("minilm")
    module, inputs = loaded.module, loaded.task.example_inputs(8)
    inputs = tuple(t[:, :64] for t in inputs)

    def run(training: bool):
        module.train(training)
        with torch.inference_mode():
            for _ in range(3):
                module(*inputs)

    result = compare(lambda: run(True), lambda: run(False), rounds)
    module.eval()
    return result, "minilm (dropout 0.1), 3 forwards of 8 texts × 64 tokens, inference_mode in both"


def rule_ww103(rounds):
    model, images = digits()

    def smell():
        with torch.inference_mode():
            for image in images:
                model(image.unsqueeze(0))

    def fix():
        with torch.inference_mode():
            for batch in images.split(64):
                model(batch)

    return compare(smell, fix, rounds), "digits-cnn, 256 images: one at a time vs batches of 64"


def _training(steps: int, *, sync_every: int = 0, recreate: bool = False, freeze: bool = False,
              keep_graphs: bool | None = None) -> Callable[[], object]:  # fmt: skip
    _, images = digits()
    labels = torch.randint(0, 10, (len(images),), generator=torch.Generator().manual_seed(0))

    def run():
        torch.manual_seed(0)
        model = DigitsCNN()
        if freeze:
            model.features.requires_grad_(False)
        params = model.classifier.parameters() if freeze is not None else model.parameters()
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        history = []
        for step in range(steps):
            if recreate:
                model = DigitsCNN()
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            batch = slice((step * 64) % 256, (step * 64) % 256 + 64)
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if sync_every and step % sync_every == 0:
                history.append(loss.item())
            if keep_graphs is not None:  # the loss tensor every step: with its graph, or detached
                history.append(loss if keep_graphs else loss.detach())
        return history

    return run


def rule_ww104(rounds):
    smell = _training(60, sync_every=1, freeze=None)
    fix = _training(60, sync_every=30, freeze=None)
    return compare(smell, fix, rounds), (
        "digits-cnn, 60 training steps of 64: loss.item() every step vs every 30 (CPU: no device "
        "to wait for)"
    )


def rule_ww105(rounds):
    from torch.utils.data import DataLoader, Dataset

    class Augmented(Dataset):
        def __len__(self):
            return 512

        def __getitem__(self, index):
            generator = torch.Generator().manual_seed(index)
            image = torch.randn(1, 64, 64, generator=generator)
            return torch.nn.functional.avg_pool2d(image, 8)  # a per-sample CPU transform

    def epoch(workers):
        def run():
            for batch in DataLoader(Augmented(), batch_size=64, num_workers=workers):
                batch.sum()

        return run

    result = compare(epoch(0), epoch(2), rounds)
    result["energy_ratio"] = None  # the estimate sees this process only, not the workers
    return result, (
        "512 samples with a per-sample transform, num_workers 0 vs 2 (time only: the estimate "
        "cannot see the worker processes' CPU time)"
    )


def rule_ww108(rounds):
    return compare(_training(30, recreate=True, freeze=None), _training(30, freeze=None), rounds), (
        "digits-cnn, 30 training steps: model + AdamW built every step vs once (the smell also "
        "never learns: its optimizer state is discarded)"
    )


def rule_ww109(rounds):
    model, images = digits()
    batch = images[:64]
    compiled = torch.compile(model)
    token = SOURCE.start()
    with torch.inference_mode():
        compiled(batch)  # the compilation
    compile_reading = SOURCE.stop(token)

    def calls(module):
        def run():
            with torch.inference_mode():
                for _ in range(50):
                    module(batch)

        return run

    result = compare(calls(model), calls(compiled), rounds)
    per_call_saving = (result["smell_j"] - result["fix_j"]) / 50
    result["compile_j"] = compile_reading.energy_j
    result["break_even_calls"] = (
        round(compile_reading.energy_j / per_call_saving) if per_call_saving > 0 else None
    )
    return result, "digits-cnn, 50 forwards of batch 64, eager vs torch.compile (compile excluded)"


def rule_ww110(rounds):
    smell = _training(40, freeze=False)
    fix = _training(40, freeze=True)
    return compare(smell, fix, rounds), (
        "digits-cnn, 40 steps training the classifier only: feature layers with vs without "
        "requires_grad"
    )


def rule_ww111(rounds):
    process = psutil.Process()

    def grown(keep):
        def run():
            before = process.memory_info().rss
            history = _training(60, keep_graphs=keep, freeze=None)()
            run.rss_growth = process.memory_info().rss - before
            return history

        return run

    smell, fix = grown(True), grown(False)
    result = compare(smell, fix, rounds)
    result["rss_growth_bytes_smell"] = smell.rss_growth
    result["rss_growth_bytes_fix"] = fix.rss_growth
    return (
        result,
        "digits-cnn, 60 training steps: the loss appended every step with its graph vs detached",
    )


RULES = {
    "WW101": rule_ww101,
    "WW102": rule_ww102,
    "WW103": rule_ww103,
    "WW104": rule_ww104,
    "WW105": rule_ww105,
    "WW108": rule_ww108,
    "WW109": rule_ww109,
    "WW110": rule_ww110,
    "WW111": rule_ww111,
}
NOT_ON_CPU = {
    "WW106": "pin_memory only speeds host-to-GPU copies: nothing to measure without a GPU",
    "WW107": "needs a GPU with native bf16; this CPU has none (bf16 eager ran 0.14x fp32 here)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"energy source: {SOURCE.name} ({SOURCE.method}); 1 thread; {args.rounds} rounds")
    print("| rule | smell ÷ fix energy | smell ÷ fix time | workload |")
    print("|---|---|---|---|")
    figures = {}
    for code in args.rules.split(","):
        started = time.perf_counter()
        result, workload = RULES[code](args.rounds)
        figures[code] = {**result, "workload": workload, "seconds": time.perf_counter() - started}
        energy = f"{result['energy_ratio']:.2f}x" if result["energy_ratio"] else "n/a"
        print(f"| {code} | {energy} | {result['time_ratio']:.2f}x | {workload} |", flush=True)
    for code, reason in NOT_ON_CPU.items():
        print(f"| {code} | not measured | not measured | {reason} |")
        figures[code] = {"not_measured": reason}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
