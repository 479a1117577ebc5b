"""Chaos: SIGKILL the training primary at random moments, with sync and with async replication.

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/chaos_train.py --mode sync --kills 50
    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/chaos_train.py --mode async --kills 50

Real processes (`wattwise train --role primary|standby`, file lease, TTL 1.5 s, two local
replicas), a tiny from-scratch digits-cnn, a checkpoint every 10 steps. Each kill lands at a
random step; warm standbys wait, one promotes, a replacement standby starts. Reports per mode:
acknowledged checkpoint steps lost per kill (sync must be 0; async must stay within the lag the
killed primary last reported), promotion time (kill → first resumed step) p50/p95, and whether
the final weights are bit-identical to an uninterrupted run with the same seed. Bounded: each mode
gives up after --timeout seconds (default 480) and reports the kills done by then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.api import train
from wattwise.train.chaos import run_chaos, tiny_settings, write_config

STEPS_PER_KILL = 60  # each primary trains about this many steps before its kill


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(str(a)), load_file(str(b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def one_mode(mode: str, kills: int, seed: int, timeout_s: float, root: Path) -> dict:
    steps = STEPS_PER_KILL * (kills + 1)
    overrides = {"steps": steps, "replication": mode, "async_queue_size": 2}
    reference = train(tiny_settings(root / f"{mode}-reference", **overrides))
    config = write_config(root / f"{mode}-chaos", **overrides)
    report = run_chaos(
        config, root / f"{mode}-chaos" / "run", kills, steps, seed=seed, timeout_s=timeout_s
    )
    final = root / f"{mode}-chaos" / "run" / "final.safetensors"
    lost = [k.lost_acknowledged_steps for k in report.kills]
    within = [k.lost_acknowledged_steps <= k.lag_steps_reported for k in report.kills]
    summary = {
        "mode": mode,
        "steps": steps,
        **report.to_dict(),
        "kills_with_loss": sum(1 for value in lost if value > 0),
        "max_lost_acknowledged_steps": max(lost, default=0),
        "loss_within_reported_lag": all(within),
        "max_reported_lag_steps": max((k.lag_steps_reported for k in report.kills), default=0),
        "bound_steps": report.kills[0].bound_steps if report.kills else None,
        "bit_identical_to_uninterrupted": report.finished
        and same_weights(final, Path(reference.weights_path)),
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["sync", "async", "both"], default="both")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds per mode")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    modes = ["sync", "async"] if args.mode == "both" else [args.mode]
    root = Path(tempfile.mkdtemp(prefix="wattwise-chaos-"))
    try:
        results = [one_mode(m, args.kills, args.seed, args.timeout, root) for m in modes]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for result in results:
        print(
            f"{result['mode']}: {result['kills']} kills in {result['wall_s']:.0f} s; "
            f"lost acknowledged steps max {result['max_lost_acknowledged_steps']} "
            f"({result['kills_with_loss']} kills lost any; within reported lag: "
            f"{result['loss_within_reported_lag']}, max lag {result['max_reported_lag_steps']}, "
            f"bound {result['bound_steps']}); promotion p50 {result['promotion_s_p50']:.2f} s, "
            f"p95 {result['promotion_s_p95']:.2f} s; bit-identical final weights: "
            f"{result['bit_identical_to_uninterrupted']}"
        )
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
