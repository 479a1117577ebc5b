"""Federated digits-cnn on Flower: accuracy vs centralised, bytes on the wire per update coding,
and a run that survives 3 of 10 clients and the server being killed.

    flock /tmp/wattwise-cpu.lock .venv/bin/python bench/federate.py

One run, all real processes on loopback gRPC (each client an OS process, bytes counted at the
socket relay in front of Flower's gRPC port):

1. 10 clients, Dirichlet(0.3) non-IID split, FedAvg, fp32 updates, plus a centralised baseline on
   the pooled train split: goal, federated test accuracy within 2 points of centralised.
2. The same with int8 updates (goal: >= 3.8x fewer uplink bytes on the wire, accuracy within
   0.5 point of fp32 updates) and with top-k 10% + error feedback (>= 8x fewer, within 1 point).
3. `wattwise federate-server` + 10 `wattwise federate-client` processes: 3 clients SIGKILLed in
   the middle of a round, later the server SIGKILLed and restarted with --resume: goal, the run
   finishes and every round committed before the kill is kept (resumed from the last one).
Energy figures are whatever source the machine has (here: the estimate, and it says so).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WATTWISE_QUIET", "1")

from wattwise.federate.data import open_workload, write_client_parts
from wattwise.federate.job import federate
from wattwise.federate.settings import FederateSettings, Partition, parse_compression
from wattwise.federate.wire import free_port

CLI = "from wattwise.cli import main; main()"


def accuracy_run(root: Path, coding: str, args, centralised_epochs: int = 0):
    settings = FederateSettings(
        model="digits-cnn",
        clients=args.clients,
        rounds=args.rounds,
        partition=Partition("dirichlet", args.alpha),
        compression=parse_compression(coding),
        local_epochs=args.local_epochs,
        learning_rate=args.lr,
        min_clients=args.clients // 2,
        join_timeout_s=600,
        round_timeout_s=300,
        out=root / coding.replace(":", "-"),
        centralised_epochs=centralised_epochs,
        seed=args.seed,
    )
    started = time.perf_counter()
    result = federate(settings)
    print(
        f"  {coding}: accuracy {100 * result.final_accuracy:.2f}%, uplink on the wire "
        f"{result.total_up_bytes / 1e6:.2f} MB, {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return result


def _committed(out: Path) -> list[int]:
    return sorted(
        int(p.parent.name.rsplit("-", 1)[-1]) for p in (out / "checkpoints").glob("*/manifest.json")
    )


def _server(out: Path, port: int, args, rounds: int, resume: bool) -> subprocess.Popen:
    name = "resumed" if resume else "first"
    command = [sys.executable, "-c", CLI, "federate-server", "digits-cnn", "--json"]
    command += ["--server-address", f"127.0.0.1:{port}", "--clients", str(args.clients)]
    command += ["--rounds", str(rounds), "--min-clients", "5", "--out", str(out)]
    command += ["--local-epochs", str(args.local_epochs), "--lr", str(args.lr)]
    command += ["--join-timeout", "60s" if resume else "600s", "--round-timeout", "300s"]
    command += ["--resume"] if resume else []
    return subprocess.Popen(
        command,
        stdout=(out.parent / f"server-{name}.json").open("wb"),
        stderr=(out.parent / f"server-{name}.log").open("wb"),
        stdin=subprocess.DEVNULL,
    )


def _wait_for_round(out: Path, round_number: int, server, timeout_s: float = 900) -> None:
    deadline = time.time() + timeout_s
    while not _committed(out) or max(_committed(out)) < round_number:
        if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server stopped or timed out before round {round_number}")
        time.sleep(0.1)


def fault_run(root: Path, args) -> dict:
    """3 of 10 clients killed mid-round 3, the server killed after round 5 and resumed."""
    rounds = 8
    out = root / "faults" / "run"
    parts = write_client_parts(
        open_workload("digits-cnn").task,
        args.clients,
        Partition("dirichlet", args.alpha),
        args.seed,
        root / "faults" / "clients",
    )
    port = free_port()
    server = _server(out, port, args, rounds, resume=False)
    clients = []
    for i, part in enumerate(parts):
        command = [sys.executable, "-c", CLI, "federate-client", "--server", f"127.0.0.1:{port}"]
        command += ["--data", str(part), "--partition-id", str(i), "--max-wait", "300"]
        command += ["--state-dir", str(root / "faults" / "state")]
        log = (root / "faults" / f"client-{i}.log").open("wb")
        clients.append(subprocess.Popen(command, stdout=log, stderr=log))
    resumed = None
    try:
        _wait_for_round(out, 2, server)
        time.sleep(0.3)  # round 3's weights are out: the kills land mid-round
        for victim in clients[:3]:
            victim.send_signal(signal.SIGKILL)
        killed_clients_at = max(_committed(out)) + 1
        _wait_for_round(out, 5, server)
        server.send_signal(signal.SIGKILL)
        server.wait()
        committed_at_kill = _committed(out)
        resumed = _server(out, port, args, rounds, resume=True)
        code = resumed.wait(timeout=1200)
        result = json.loads((root / "faults" / "server-resumed.json").read_text())
    finally:
        for process in [server, *clients, *([resumed] if resumed else [])]:
            if process.poll() is None:
                process.kill()
            process.wait()
    rounds_kept = [r["round"] for r in result["rounds"]]
    return {
        "exit_code": code,
        "clients_killed_in_round": killed_clients_at,
        "server_killed_after_round": max(committed_at_kill),
        "resumed_from_round": result["resumed_from_round"],
        "rounds_in_final_record": rounds_kept,
        "no_committed_round_lost": result["resumed_from_round"] == max(committed_at_kill)
        and rounds_kept == list(range(1, rounds + 1)),
        "dropped_per_round": [r["dropped"] for r in result["rounds"]],
        "accepted_per_round": [r["accepted"] for r in result["rounds"]],
        "final_accuracy": result["final_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--centralised-epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="wattwise-federate-bench-"))
    print(f"outputs in {root}", flush=True)
    fp32 = accuracy_run(root, "none", args, centralised_epochs=args.centralised_epochs)
    int8 = accuracy_run(root, "int8", args)
    topk = accuracy_run(root, "topk:0.1", args)
    central = max(fp32.centralised.accuracy_per_epoch)
    summary = {
        "setup": vars(args) | {"out": str(root)},
        "centralised_best_accuracy": central,
        "fp32": {"accuracy": fp32.final_accuracy, "up_bytes": fp32.total_up_bytes},
        "int8": {"accuracy": int8.final_accuracy, "up_bytes": int8.total_up_bytes},
        "topk10_error_feedback": {"accuracy": topk.final_accuracy, "up_bytes": topk.total_up_bytes},
        "energy_j": {
            "fp32": fp32.total_energy_j,
            "int8": int8.total_energy_j,
            "topk": topk.total_energy_j,
            "source": fp32.energy_source,
            "method": fp32.energy_method,
        },
        "to_same_accuracy": fp32.to_same_accuracy,
        "wire_source": fp32.wire_source,
    }
    summary["goals"] = {
        "federated_within_2_points_of_centralised": central - fp32.final_accuracy <= 0.02,
        "int8_bytes_ratio": fp32.total_up_bytes / int8.total_up_bytes,
        "int8_ge_3.8x_and_within_0.5_point": fp32.total_up_bytes / int8.total_up_bytes >= 3.8
        and fp32.final_accuracy - int8.final_accuracy <= 0.005,
        "topk_bytes_ratio": fp32.total_up_bytes / topk.total_up_bytes,
        "topk_ge_8x_and_within_1_point": fp32.total_up_bytes / topk.total_up_bytes >= 8
        and fp32.final_accuracy - topk.final_accuracy <= 0.01,
    }
    print(json.dumps(summary, indent=1), flush=True)
    faults = fault_run(root, args)
    summary["faults"] = faults
    print(json.dumps({"faults": faults}, indent=1), flush=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
