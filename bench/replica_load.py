"""What a model replica pays to load a variant: the full load (source model too, before issue 14)
vs the serving-only load, in fresh processes, interleaved; wall seconds and resident memory.

    .venv/bin/python bench/replica_load.py VARIANT_DIR [--rounds 2]

Each load runs in a new Python process (as a new replica would), timing imports separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
started = time.perf_counter()
import torch, transformers, psutil
from wattwise.compress.variant import open_model
imported = time.perf_counter()
loaded = open_model(sys.argv[1], serving_only=sys.argv[2] == "serving")
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": done - imported,
                  "rss_bytes": psutil.Process().memory_info().rss}))
"""


def one(variant: str, mode: str) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", CHILD, variant, mode], capture_output=True, text=True, check=True
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"full": [], "serving": []}
    for _ in range(args.rounds):
        for mode in runs:
            runs[mode].append(one(args.variant, mode))
            print(mode, json.dumps(runs[mode][-1]), file=sys.stderr)

    def median(mode: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[mode])

    report = {
        "variant": args.variant,
        "runs": runs,
        "load_s_serving_over_full": median("serving", "load_s") / median("full", "load_s"),
        "rss_serving_over_full": median("serving", "rss_bytes") / median("full", "rss_bytes"),
        "rss_mib_full": median("full", "rss_bytes") / 2**20,
        "rss_mib_serving": median("serving", "rss_bytes") / 2**20,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
