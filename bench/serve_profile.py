"""Where the server's CPU goes per request: per Ray process, then per layer inside each (py-spy).

    WATTWISE_CACHE=/tmp/wwc .venv/bin/python bench/serve_profile.py --model DIR_OR_NAME \
        [--clients 64] [--duration 20s] [--out FILE]

One server (2 model replicas, loopback) under a `wattwise loadtest`-style load. During the
load, `py-spy record --gil --nonblocking` samples every Ray Serve process (HTTP proxy, ingress,
model replicas, controller); psutil reads each process's CPU seconds over the same window.
A sample holding the GIL is attributed to the first layer found walking its stack from the
innermost frame out (see LAYERS); each process's measured CPU time is split by those shares.
Figures are CPU milliseconds per successful request (psutil, measured) and shares of samples
(py-spy); the split inside a process is an attribution, not a measurement per layer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from wattwise.serve.loadtest import run_loadtest
from wattwise.serve.processes import descendants
from wattwise.serve.server import start_server
from wattwise.serve.settings import ServeSettings

SAMPLE_RATE_HZ = 100
# The virtual environment's py-spy (ray[serve] installs it), also when .venv/bin is not on
# PATH (the documented command runs .venv/bin/python directly).
PY_SPY = str(Path(sys.executable).with_name("py-spy"))
# (layer, substrings of a frame "function (file:line)"), tried innermost frame first.
LAYERS = (
    ("model (torch, onnxruntime, tokenizer)", ("torch/", "onnxruntime", "tokenizers", "/models/")),
    ("pydantic validation", ("pydantic",)),
    ("JSON encode/decode", ("json/", "orjson", "jsonable_encoder", "serialize_response")),
    ("Ray object (de)serialisation", ("pickle", "serialization.py", "msgpack")),
    ("wattwise guard + metrics", ("wattwise/serve/guard.py", "wattwise/serve/metrics.py")),
    ("FastAPI / Starlette", ("starlette", "fastapi")),
    ("HTTP server (uvicorn, h11)", ("uvicorn", "h11", "httptools")),
    ("Ray Serve router, handle, replica wrapper", ("ray/serve",)),
    ("Ray core (Python side)", ("ray/_private", "ray/_raylet", "ray/actor", "ray/remote")),
    ("asyncio event loop", ("asyncio", "selectors", "uvloop")),
)


def role(process: psutil.Process) -> str | None:
    """Which part of the server a Ray process is, from its title."""
    try:
        title = " ".join(process.cmdline())
    except psutil.Error:
        return None
    for marker, name in (
        ("ServeReplica:wattwise:Ingress", "ingress"),
        ("ServeReplica:wattwise:ModelReplica", "model replica"),
        ("ProxyActor", "HTTP proxy"),
        ("ServeController", "controller"),
    ):
        if marker in title:
            return name
    return None


def layer(stack: str) -> str:
    """The layer of one collapsed stack ("outer;...;inner")."""
    for frame in reversed(stack.split(";")):
        for name, markers in LAYERS:
            if any(marker in frame for marker in markers):
                return name
    return "other Python"


def parse_raw(path: Path) -> Counter:
    """py-spy's raw (collapsed) output → samples per layer."""
    layers: Counter = Counter()
    if not path.is_file():
        return layers
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            layers[layer(stack)] += int(count)
    return layers


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def profile(url: str, clients: int, duration_s: float, work: Path) -> dict:
    """Load the server while py-spy samples each Ray Serve process; CPU ms per request."""
    processes = [(p, role(p)) for p in descendants(os.getpid())]
    processes = [(p, r) for p, r in processes if r]
    before = {p.pid: cpu_seconds(p) for p, _ in processes}
    spies = []
    for process, _ in processes:
        out = work / f"{process.pid}.txt"
        command = [PY_SPY, "record", "--pid", str(process.pid), "--gil", "--nonblocking"]
        command += ["-r", str(SAMPLE_RATE_HZ), "-d", str(int(duration_s)), "-f", "raw"]
        command += ["-o", str(out)]
        spies.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=run_loadtest(url, clients, duration_s))
    )
    thread.start()
    thread.join()
    after = {p.pid: cpu_seconds(p) for p, _ in processes}
    for spy in spies:
        spy.wait(timeout=60)
    result = outcome["result"]
    requests = max(1, result.succeeded)
    by_role: dict = {}
    for process, name in processes:
        cpu_ms = 1000 * (after[process.pid] - before[process.pid]) / requests
        entry = by_role.setdefault(
            name, {"processes": 0, "cpu_ms_per_request": 0.0, "samples": Counter()}
        )
        entry["processes"] += 1
        entry["cpu_ms_per_request"] += cpu_ms
        entry["samples"].update(parse_raw(work / f"{process.pid}.txt"))
    for entry in by_role.values():
        samples = entry.pop("samples")
        total = sum(samples.values()) or 1
        # Shares of the GIL-holding samples, applied to the process's measured CPU time. A
        # sampled thread may hold the GIL while descheduled on a busy machine, so sample counts
        # are not CPU time themselves; native threads without the GIL (ONNX Runtime's compute,
        # Ray's C++ core) are not sampled and are spread by these Python shares too.
        entry["python_layer_share"] = {
            layer_name: count / total for layer_name, count in samples.most_common()
        }
        entry["layers_cpu_ms_per_request"] = {
            layer_name: entry["cpu_ms_per_request"] * share
            for layer_name, share in entry["python_layer_share"].items()
        }
    return {
        "requests": result.succeeded,
        "failed": result.failed,
        "throughput_per_s": result.throughput_per_s,
        "client_cpu_ms_per_request": 1000 * result.client_cpu_s / requests,
        "server_cpu_ms_per_request": sum(e["cpu_ms_per_request"] for e in by_role.values()),
        "by_process": by_role,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8193)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    settings = ServeSettings(model=args.model, port=args.port, max_queued_requests=256)
    server = start_server(settings)
    try:
        run_loadtest(server.url, args.clients, 3.0)  # warm-up
        with tempfile.TemporaryDirectory(prefix="wwprof-") as work:
            report = {"model": args.model, "clients": args.clients, "cores": os.cpu_count()}
            report |= profile(server.url, args.clients, args.duration, Path(work))
    finally:
        server.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    time.sleep(0)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
