"""What checkpointing costs: loop stall per checkpoint (sync vs async), throughput and energy.

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/checkpoint.py

digits-cnn from scratch at its full size (32/64 channels, 256 hidden; 1.0 MB of weights, 3.1 MB
per checkpoint with AdamW state), batch 64, two local replicas on the same disk, every replica
write fsync'd. Five runs (--repeats), interleaved, of each: no checkpoint until the final step (baseline),
sync every N steps, async every N steps, N = the default interval. Reports medians: loop stall per
checkpoint (snapshot + queue or writes), wall time of the training loop and its overhead over the
baseline (CheckFreq's goal: ≤3.5%), and energy with its source and overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.api import train
from wattwise.train.config import CheckpointSettings

DEFAULT_INTERVAL = CheckpointSettings().every_steps


def settings(root: Path, steps: int, interval: int, mode: str) -> dict:
    return {
        "model": "digits-cnn",
        "from_scratch": True,
        "steps": steps,
        "batch_size": 64,
        "learning_rate": 0.002,
        "checkpoint": {"every_steps": interval, "keep_last": 2},
        "replicas": [str(root / "replica-a"), str(root / "replica-b")],
        "replication": mode,
        "run_dir": str(root / "run"),
    }


def run_once(steps: int, interval: int, mode: str) -> dict:
    root = Path(tempfile.mkdtemp(prefix="wattwise-ckpt-bench-"))
    try:
        result = train(settings(root, steps, interval, mode))
        size = sum(p.stat().st_size for p in (root / "replica-a").glob("step-*/*"))
        return {
            "train_s": result.train_s,
            "stall_s_mean": result.stall_s_mean,
            "checkpoints": result.checkpoints,
            "energy_j": result.energy_j,
            "energy_source": result.energy_source,
            "energy_uncertainty_pct": result.energy_uncertainty_pct,
            "checkpoint_bytes": size // max(1, len(list((root / "replica-a").glob("step-*")))),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=DEFAULT_INTERVAL)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    configs = {
        "baseline": (args.steps, "sync"),  # one checkpoint, at the final step
        "sync": (args.interval, "sync"),
        "async": (args.interval, "async"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    run_once(50, 50, "sync")  # warm-up: imports, data set, allocator
    for _ in range(args.repeats):
        for name, (interval, mode) in configs.items():
            runs[name].append(run_once(args.steps, interval, mode))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    base_s, base_j = median("baseline", "train_s"), median("baseline", "energy_j")
    base_all = [r["train_s"] for r in runs["baseline"]]
    summary = {"steps": args.steps, "interval": args.interval, "repeats": args.repeats}
    for name in configs:
        summary[name] = {
            "train_s": median(name, "train_s"),
            "stall_ms_per_checkpoint": 1000 * median(name, "stall_s_mean"),
            "checkpoints": runs[name][0]["checkpoints"],
            "throughput_overhead_pct": 100 * (median(name, "train_s") / base_s - 1),
            # The loop's own waiting, without the run-to-run noise of a shared machine: extra
            # checkpoints × stall / baseline loop time (background CPU use is not in it).
            "stall_overhead_pct": 100
            * (runs[name][0]["checkpoints"] - 1)
            * median(name, "stall_s_mean")
            / base_s,
            "baseline_spread_pct": 100 * (max(base_all) - min(base_all)) / base_s,
            "energy_j": median(name, "energy_j"),
            "energy_overhead_pct": 100 * (median(name, "energy_j") / base_j - 1),
            "energy_source": runs[name][0]["energy_source"],
            "energy_uncertainty_pct": runs[name][0]["energy_uncertainty_pct"],
            "checkpoint_bytes": runs[name][0]["checkpoint_bytes"],
            "train_s_all": [round(r["train_s"], 3) for r in runs[name]],
        }
    ratio = summary["async"]["stall_ms_per_checkpoint"] / summary["sync"]["stall_ms_per_checkpoint"]
    summary["async_stall_pct_of_sync"] = 100 * ratio
    for name in ("sync", "async"):
        row = summary[name]
        print(
            f"{name:5s} every {args.interval}: stall {row['stall_ms_per_checkpoint']:.2f} ms/ckpt, "
            f"loop {row['train_s']:.2f} s vs baseline {base_s:.2f} s "
            f"({row['throughput_overhead_pct']:+.2f}%; stall alone {row['stall_overhead_pct']:.2f}%; "
            f"baseline spread {row['baseline_spread_pct']:.0f}%), energy {row['energy_j']:.1f} J "
            f"({row['energy_overhead_pct']:+.2f}%, {row['energy_source']})"
        )
    print(f"async stall = {summary['async_stall_pct_of_sync']:.1f}% of sync stall")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
