"""One run of the serving benchmark (issue 7 goals); prints a JSON report and a summary.

    WATTWISE_CACHE=/tmp/wwc flock /tmp/wattwise-cpu.lock \
        .venv/bin/python bench/serve.py --model DIR_OR_NAME [--swap-to MODEL] [--out FILE]

Steps, all on this machine (the load generator shares its cores with the server):
1. in-process throughput of the model at batch 1 and batch 32 (same text as the load test),
   and its CPU time per input, with all cores;
2. the server (2 replicas, max batch 32, 5 ms wait) under 64 clients with 1 and 8 inputs per
   request: throughput, latency, CPU time per request of every server process;
3. the same server with batching off (max batch 1): the served gain from batching, and the
   p99 latency batching adds at concurrency 1;
4. SIGKILL of one of 2 replicas in the middle of a 64-client load: failures, time until the
   dead replica leaves rotation and until 2 replicas are healthy again;
5. a live swap to `--swap-to` under 64-client load: non-2xx responses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

from wattwise.compress.variant import open_model
from wattwise.durations import parse_duration
from wattwise.serve.loadtest import LoadtestResult, run_loadtest
from wattwise.serve.processes import descendants, replica_processes
from wattwise.serve.server import deploy, start_server, wait_ready
from wattwise.serve.settings import APP_NAME, MODEL_DEPLOYMENT, ServeSettings
from wattwise.serve.signature import describe_model

CLIENTS = 64


def in_process(model: str, repeat: int, repetitions: int = 30) -> dict:
    """Samples/s and CPU ms per sample at batch 1 and 32, all cores, the load test's input."""
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = open_model(model)
    signature = describe_model(loaded)
    example = example_input(signature.example, repeat)
    result = {"threads": torch.get_num_threads()}
    for batch in (1, 32):
        samples = [example] * batch
        if signature.input_kind == "text":
            inputs = loaded.task.tokenize(samples)
        else:
            from wattwise.serve.signature import array_inputs

            inputs = array_inputs(signature, samples)
        with torch.inference_mode():
            for _ in range(3):
                loaded.module(*inputs)
            wall, cpu = [], []
            for _ in range(repetitions):
                cpu_start, start = time.process_time(), time.perf_counter()
                loaded.module(*inputs)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
        result[f"samples_per_s_bs{batch}"] = batch / statistics.median(wall)
        result[f"cpu_ms_per_sample_bs{batch}"] = 1000 * statistics.median(cpu) / batch
    if signature.input_kind == "text":
        result["tokens_per_input"] = int(loaded.task.tokenize([example])[0].shape[1])
    return result


def example_input(example, repeat: int):
    """The server's example, or for text models that sentence repeated (longer sequences)."""
    return " ".join([example] * repeat) if isinstance(example, str) else example


BODY = {"repeat": 1, "example": None}


def body(inputs: int) -> bytes | None:
    """Request body with `inputs` copies of the benchmark input (None: the server's example)."""
    if BODY["example"] is None:
        return None
    return json.dumps({"inputs": [BODY["example"]] * inputs}).encode()


def load(
    url: str, clients: int, duration: str, inputs: int = 1, grpc_target: str | None = None
) -> LoadtestResult:
    return run_loadtest(
        url,
        clients,
        duration,
        inputs_per_request=inputs,
        body=body(inputs),
        grpc_target=grpc_target,
    )


def tree_cpu_seconds() -> dict[int, float]:
    """CPU seconds so far of every process under this one (the Ray tree we started)."""
    seconds = {}
    for process in descendants(os.getpid()):
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seconds


def measured_load(
    url: str, clients: int, duration: str, inputs: int, grpc_target: str | None = None
) -> tuple[LoadtestResult, float]:
    """A load test and the server tree's CPU seconds during it (processes alive throughout)."""
    before = tree_cpu_seconds()
    result = load(url, clients, duration, inputs, grpc_target)
    after = tree_cpu_seconds()
    server_cpu = sum(after[pid] - before[pid] for pid in before.keys() & after.keys())
    return result, server_cpu


def summary(result: LoadtestResult) -> dict:
    keep = ("throughput_per_s", "inputs_per_s", "latency_ms_p50", "latency_ms_p95")
    keep += ("latency_ms_p99", "requests", "succeeded", "errors_by_status", "client_cpu_s")
    return {key: getattr(result, key) for key in keep} | {"duration_s": result.duration_s}


def running_replicas() -> int:
    from ray import serve

    deployments = serve.status().applications[APP_NAME].deployments
    return deployments[MODEL_DEPLOYMENT].replica_states.get("RUNNING", 0)


def kill_one_replica_under_load(url: str, duration: str) -> dict:
    """SIGKILL one replica 1/3 into a 64-client load; when it left rotation and came back."""
    victims = replica_processes(os.getpid())
    outcome: dict = {}
    load_thread = threading.Thread(
        target=lambda: outcome.update(result=load(url, CLIENTS, duration))
    )
    load_thread.start()
    time.sleep(parse_duration(duration) / 3)
    victims[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    left_rotation_s = healthy_again_s = None
    while time.monotonic() - killed_at < 120:
        running = running_replicas()
        if left_rotation_s is None and running < 2:
            left_rotation_s = time.monotonic() - killed_at
        new = [p for p in replica_processes(os.getpid()) if p.pid != victims[0].pid]
        if left_rotation_s is not None and running >= 2 and len(new) >= 2:
            healthy_again_s = time.monotonic() - killed_at
            break
        time.sleep(0.1)
    load_thread.join()
    return {
        "load": summary(outcome["result"]),
        "failed_requests": outcome["result"].failed,
        "dead_replica_out_of_rotation_s": left_rotation_s,
        "two_healthy_replicas_again_s": healthy_again_s,
    }


def replacement_rounds(model: str, port: int, duration: str, rounds: int) -> list[dict]:
    """`rounds` SIGKILLs of one of 2 replicas, each under its own 64-client load."""
    server = start_server(ServeSettings(model=model, port=port, max_queued_requests=256))
    kills = []
    try:
        load(server.url, CLIENTS, "3s")
        for _ in range(rounds):
            kills.append(kill_one_replica_under_load(server.url, duration))
            print(json.dumps(kills[-1]), file=sys.stderr)
            wait_ready(server.url)
    finally:
        server.stop()
    return kills


def swap_under_load(url: str, settings: ServeSettings, target: str, duration: str) -> dict:
    """Roll to `target` 5 s into a 64-client load; count non-2xx responses."""
    outcome: dict = {}
    load_thread = threading.Thread(
        target=lambda: outcome.update(result=load(url, CLIENTS, duration))
    )
    load_thread.start()
    time.sleep(5.0)
    started = time.monotonic()
    deploy(dataclasses.replace(settings, model=target).checked())
    wait_ready(url)
    swap_s = time.monotonic() - started
    load_thread.join()
    result = outcome["result"]
    return {
        "load": summary(result),
        "non_2xx": result.failed,
        "swap_s": swap_s,
        "swap_finished_during_load": swap_s + 5.0 < result.duration_s,
        "to": target,
    }


def interleaved_loads(url: str, duration: str, rounds: int, sides: dict) -> dict:
    """64-client loads of 1 input per request, the sides' rounds interleaved on one server;
    `sides`: name → (what to do before each of its loads, gRPC target or None for HTTP).
    Returns each side's runs and their ratios (the second side over the first)."""
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, (prepare, grpc_target) in sides.items():
            prepare()
            load(url, CLIENTS, "3s", 1, grpc_target)
            result, server_cpu = measured_load(url, CLIENTS, duration, 1, grpc_target)
            runs[name].append(
                summary(result)
                | {"server_cpu_ms_per_request": 1000 * server_cpu / max(1, result.succeeded)}
            )
            print(name, json.dumps(runs[name][-1]), file=sys.stderr)

    def mean(name: str, key: str) -> float:
        return statistics.fmean(run[key] for run in runs[name])

    first, second = sides
    return {
        "runs": runs,
        **{f"cpu_ms_per_request_{n}": mean(n, "server_cpu_ms_per_request") for n in sides},
        **{f"p99_ms_{n}": mean(n, "latency_ms_p99") for n in sides},
        f"cpu_per_request_{second}_over_{first}": mean(second, "server_cpu_ms_per_request")
        / mean(first, "server_cpu_ms_per_request"),
        f"throughput_{second}_over_{first}": mean(second, "throughput_per_s")
        / mean(first, "throughput_per_s"),
        "failed": sum(run["requests"] - run["succeeded"] for r in runs.values() for run in r),
    }


def overhead_before_after(url: str, settings: ServeSettings, duration: str, rounds: int = 1):
    """Server CPU per request with one model call per request ("before", issue 14) and with
    the ingress joining requests ("after"), interleaved on one server: ratios, one run."""

    def joined(on: bool):
        def prepare() -> None:
            deploy(dataclasses.replace(settings, ingress_batching=on).checked())
            wait_ready(url)

        return prepare

    sides = {"before": (joined(False), None), "after": (joined(True), None)}
    return interleaved_loads(url, duration, rounds, sides)


def http_vs_grpc(server, duration: str, rounds: int) -> dict:
    """Server CPU per request, throughput and latency through the HTTP and the gRPC ingress
    (`--grpc-port`), same server, same bodies, rounds interleaved: ratios, one run."""
    sides = {"http": (lambda: None, None), "grpc": (lambda: None, server.grpc_target)}
    return interleaved_loads(server.url, duration, rounds, sides)


def add_outside_model(figures: dict, in_process_figures: dict, sides: tuple[str, ...]) -> None:
    """Each side's server CPU per request minus the model's own CPU per input (in process,
    batch 32): `outside_model_cpu_ms_per_request_<side>`."""
    model_cpu_ms = in_process_figures["cpu_ms_per_sample_bs32"]
    for side in sides:
        figures[f"outside_model_cpu_ms_per_request_{side}"] = (
            figures[f"cpu_ms_per_request_{side}"] - model_cpu_ms
        )


def finish(report: dict, out: str | None) -> None:
    """Print the JSON report, and write it to `out` when given."""
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def replica_memory(url: str) -> dict[str, float]:
    """Each model replica's resident memory (bytes) as `/metrics` reports it."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        sample.labels["replica"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "wattwise_replica_resident_bytes"
        for sample in family.samples
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="variant dir or model name to serve")
    parser.add_argument("--swap-to", default=None, help="model to roll to (default: --model)")
    parser.add_argument("--duration", default="20s", help="length of each measured load")
    parser.add_argument("--port", type=int, default=8191)
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    parser.add_argument(
        "--text-repeat", type=int, default=1, help="text models: repeat the example sentence"
    )
    parser.add_argument(
        "--only-overhead",
        action="store_true",
        help="only the per-request overhead before/after the ingress joins requests",
    )
    parser.add_argument(
        "--only-protocols",
        action="store_true",
        help="only server CPU per request through HTTP vs gRPC (serve --grpc-port), interleaved",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--only-overhead / --only-protocols: interleaved rounds of each",
    )
    parser.add_argument(
        "--only-replacement",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only SIGKILL one of 2 replicas under load, ROUNDS times: replacement times",
    )
    args = parser.parse_args()
    report: dict = {"model": args.model, "clients": CLIENTS, "cores": os.cpu_count()}
    if args.only_replacement:
        report["kills"] = replacement_rounds(
            args.model, args.port, args.duration, args.only_replacement
        )
        print(json.dumps(report, indent=2, default=str))
        return
    if args.only_protocols:
        settings = ServeSettings(
            model=args.model, port=args.port, grpc_port=args.port + 1, max_queued_requests=256
        )
        report["in_process"] = in_process(args.model, args.text_repeat)
        server = start_server(settings)
        try:
            if args.text_repeat > 1 and server.signature.input_kind == "text":
                BODY["example"] = example_input(server.signature.example, args.text_repeat)
            report["protocols"] = http_vs_grpc(server, args.duration, args.rounds)
        finally:
            server.stop()
        add_outside_model(report["protocols"], report["in_process"], ("http", "grpc"))
        finish(report, args.out)
        return
    if args.only_overhead:
        settings = ServeSettings(model=args.model, port=args.port, max_queued_requests=256)
        report["in_process"] = in_process(args.model, args.text_repeat)
        server = start_server(settings)
        try:
            if args.text_repeat > 1 and server.signature.input_kind == "text":
                BODY["example"] = example_input(server.signature.example, args.text_repeat)
            report["overhead"] = overhead_before_after(
                server.url, settings, args.duration, args.rounds
            )
            report["replica_resident_bytes"] = replica_memory(server.url)
            report["kill"] = kill_one_replica_under_load(server.url, args.duration)
            print(json.dumps(report["kill"]), file=sys.stderr)
        finally:
            server.stop()
        add_outside_model(report["overhead"], report["in_process"], ("before", "after"))
        finish(report, args.out)
        return
    report["text_repeat"] = args.text_repeat
    report["in_process"] = in_process(args.model, args.text_repeat)
    print(json.dumps(report["in_process"]), file=sys.stderr)

    settings = ServeSettings(model=args.model, port=args.port, max_queued_requests=256)
    server = start_server(settings)
    try:
        url = server.url
        if args.text_repeat > 1 and server.signature.input_kind == "text":
            BODY["example"] = example_input(server.signature.example, args.text_repeat)
        load(url, CLIENTS, "3s")  # warm-up: connections, first batches
        served = {}
        for inputs in (1, 8):
            result, server_cpu = measured_load(url, CLIENTS, args.duration, inputs)
            served[f"{inputs}_per_request"] = summary(result) | {
                "server_cpu_ms_per_request": 1000 * server_cpu / max(1, result.succeeded),
            }
            print(json.dumps(served[f"{inputs}_per_request"]), file=sys.stderr)
        report["served_batching"] = served
        report["served_concurrency_1_batching"] = summary(load(url, 1, "10s"))

        report["kill"] = kill_one_replica_under_load(url, args.duration)
        print(json.dumps(report["kill"]), file=sys.stderr)
        wait_ready(url)
        report["swap"] = swap_under_load(url, settings, args.swap_to or args.model, "60s")
        print(json.dumps(report["swap"]), file=sys.stderr)

        # Batching off: the same model with max batch 1 (rolled in place, no Ray restart).
        deploy(dataclasses.replace(settings, max_batch_size=1).checked())
        wait_ready(url)
        load(url, CLIENTS, "3s")
        result, server_cpu = measured_load(url, CLIENTS, args.duration, 1)
        report["served_no_batching"] = summary(result) | {
            "server_cpu_ms_per_request": 1000 * server_cpu / max(1, result.succeeded)
        }
        report["served_concurrency_1_no_batching"] = summary(load(url, 1, "10s"))
    finally:
        server.stop()
    report["goals"] = goals(report)
    finish(report, args.out)


def goals(report: dict) -> dict:
    """The issue's goals, computed from the measurements (ratios, not verdicts by hand)."""
    local = report["in_process"]
    one, eight = (
        report["served_batching"]["1_per_request"],
        report["served_batching"]["8_per_request"],
    )
    in_process_gain = local["samples_per_s_bs32"] / local["samples_per_s_bs1"]
    served_gain = one["inputs_per_s"] / report["served_no_batching"]["inputs_per_s"]
    model_cpu_ms = local["cpu_ms_per_sample_bs32"]
    added_p99 = (
        report["served_concurrency_1_batching"]["latency_ms_p99"]
        - report["served_concurrency_1_no_batching"]["latency_ms_p99"]
    )
    return {
        "served_vs_in_process_1_per_request": one["inputs_per_s"] / local["samples_per_s_bs32"],
        "served_vs_in_process_8_per_request": eight["inputs_per_s"] / local["samples_per_s_bs32"],
        "in_process_batching_gain": in_process_gain,
        "served_batching_gain": served_gain,
        "batching_gain_recovered": served_gain / in_process_gain,
        "added_p99_ms_at_concurrency_1": added_p99,
        "overhead_cpu_ms_per_request_1_per_request": one["server_cpu_ms_per_request"]
        - model_cpu_ms,
        "load_generator_cpu_ms_per_request": 1000 * one["client_cpu_s"] / max(1, one["succeeded"]),
        "kill_failed_requests": report["kill"]["failed_requests"],
        "kill_out_of_rotation_s": report["kill"]["dead_replica_out_of_rotation_s"],
        "kill_two_healthy_again_s": report["kill"]["two_healthy_replicas_again_s"],
        "swap_non_2xx": report["swap"]["non_2xx"],
    }


if __name__ == "__main__":
    main()
