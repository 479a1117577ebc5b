"""Where an ONNX Runtime text-encoder variant spends its time, by operator type (ORT's own
profiler), on one single-threaded session as the execution plan runs it.

    bench/as_avx2.sh .venv/bin/python bench/ort_op_profile.py OUT/variant/model.onnx \
        --disable SkipLayerNormFusion --batch 2 --tokens 128

Prints each operator type's share of kernel time, ms per run and nodes per run.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX text encoder (input_ids, attention_mask, ...)")
    parser.add_argument("--disable", default="", help="ORT optimizers to disable, comma-separated")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(
        args.model,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=[name for name in args.disable.split(",") if name] or None,
    )
    generator = np.random.default_rng(0)
    shape = (args.batch, args.tokens)
    feeds = {
        i.name: generator.integers(100, 20000, size=shape)
        if "input_ids" in i.name
        else np.ones(shape)
        for i in session.get_inputs()
    }
    feeds = {name: value.astype(np.int64) for name, value in feeds.items()}
    for _ in range(args.runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    micros: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    total = sum(micros.values())
    for op, spent in micros.most_common():
        print(
            f"{op:28} {spent / total:6.1%}  {spent / args.runs / 1000:6.2f} ms/run  "
            f"{nodes[op] // args.runs} nodes/run"
        )
    print(f"total kernel time: {total / args.runs / 1000:.2f} ms per run of {shape}")


if __name__ == "__main__":
    main()
