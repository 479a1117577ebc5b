"""Whole runs with real processes on loopback gRPC and with Flower's simulation engine.

Slow: each client is an OS process importing torch and Flower (seconds each on a busy machine).
"""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="install federate-requirements.txt (make install does)")

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from wattwise.federate.data import open_workload, write_client_parts
from wattwise.federate.runner import Hooks, run_federated
from wattwise.federate.settings import FederateSettings, Partition, parse_compression
from wattwise.federate.wire import free_port

pytestmark = pytest.mark.slow
CLI = "from wattwise.cli import main; main()"


def _settings(tmp_path: Path, **overrides) -> FederateSettings:
    values = dict(
        clients=3,
        rounds=3,
        min_clients=2,
        local_epochs=1,
        out=tmp_path,
        join_timeout_s=240,
        round_timeout_s=600,  # only a bound on a hung client: Ray actors start inside round 1
    )
    values.update(overrides)
    return FederateSettings(**values)


def test_simulation_and_processes_reach_the_same_accuracy_for_the_same_seed(tmp_path):
    processes = run_federated(_settings(tmp_path / "processes", mode="processes"))
    simulation = run_federated(_settings(tmp_path / "simulation", mode="simulation"))
    for p, s in zip(processes.rounds, simulation.rounds, strict=True):
        assert abs(p.accuracy - s.accuracy) <= 0.03, (p.round, p.accuracy, s.accuracy)
        assert p.payload_up_bytes == s.payload_up_bytes  # same coded tensors in both modes
    assert processes.final_accuracy > processes.rounds[0].accuracy
    # bytes on the wire are counted at the socket, and include gRPC/HTTP2 framing
    for record in processes.rounds:
        assert record.wire_up_bytes > record.payload_up_bytes > 0
        assert record.wire_down_bytes > record.payload_down_bytes > 0
    assert all(r.wire_up_bytes is None for r in simulation.rounds)


def test_faults_dropout_straggler_and_malformed_update_in_processes(tmp_path):
    """4 client processes: 0 SIGKILLs itself mid-round 2 (after it received the round's weights,
    before it answers), 1 is a straggler, 2 sends NaN every round, 3 is honest.

    Every outcome is fixed, whatever the machine's speed: the round timeout (15 s) is over 20
    honest rounds long on a loaded 2-core machine (~0.6 s each), the straggler stalls until
    after the whole run, and the dying client dies at a point in its own code, not at a moment
    on a clock.
    """
    settings = _settings(
        tmp_path,
        clients=4,
        min_clients=1,
        rounds=3,
        round_timeout_s=15,
        compression=parse_compression("int8"),
        client_faults={0: "die:2", 1: "slow", 2: "nan"},
    )
    hooks = Hooks(capture_upstream=True)
    result = run_federated(settings, hooks=hooks)
    assert [r.round for r in result.rounds] == [1, 2, 3]
    accepted = [sorted(c.partition for c in r.clients if c.accepted) for r in result.rounds]
    assert accepted == [[0, 3], [3], [3]]
    assert [r.selected for r in result.rounds] == [4, 3, 2]
    # round 1: the straggler, past the round timeout; round 2: the killed client; the straggler
    # was cut off at its timeout, and the killed client is gone, so neither is asked again
    assert [r.dropped for r in result.rounds] == [1, 1, 0]
    assert all(r.rejected == 1 for r in result.rounds)  # the NaN client, every round
    assert all("NaN" in " ".join(r.rejections) for r in result.rounds)
    assert all(r.aggregated and np.isfinite(r.accuracy) for r in result.rounds)
    assert hooks.clients[0].returncode == -signal.SIGKILL  # a real killed process
    # int8: each honest update crosses the wire in under a quarter of its fp32 size + framing
    fp32_bytes = 4 * sum(
        int(np.prod(v.shape)) for v in open_workload("digits-cnn").build().state_dict().values()
    )
    last = result.rounds[-1]
    assert last.wire_up_bytes < (last.accepted + last.rejected) * fp32_bytes / 3.8
    # no client's samples crossed the wire: no image row of any client file is in the upstream
    upstream = hooks.relay.captured_upstream()
    assert len(upstream) > 0
    for part in sorted((tmp_path / "clients").glob("client-*.npz")):
        with np.load(part) as data:
            rows = data["inputs"].astype(np.float32)
        for row in rows[:20]:
            assert row.tobytes() not in upstream


def _server(tmp_path, port, resume=False, rounds=4):
    command = [sys.executable, "-c", CLI, "federate-server", "digits-cnn"]
    command += ["--server-address", f"127.0.0.1:{port}", "--clients", "3", "--rounds", str(rounds)]
    command += ["--min-clients", "2", "--out", str(tmp_path / "out"), "--join-timeout", "240s"]
    command += ["--json"] + (["--resume"] if resume else [])
    log = (tmp_path / f"server-{'resume' if resume else 'first'}.log").open("wb")
    out = (tmp_path / f"server-{'resume' if resume else 'first'}.json").open("wb")
    return subprocess.Popen(command, stdout=out, stderr=log, stdin=subprocess.DEVNULL)


def _committed_rounds(tmp_path) -> list[int]:
    root = tmp_path / "out" / "checkpoints"
    return sorted(int(p.parent.name.split("-")[-1]) for p in root.glob("*/manifest.json"))


def test_a_killed_server_resumes_from_its_last_committed_round(tmp_path):
    import json

    workload = open_workload("digits-cnn")
    parts = write_client_parts(workload.task, 3, Partition("iid"), 0, tmp_path / "parts")
    port = free_port()
    server = _server(tmp_path, port)
    clients = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", CLI, "federate-client", "--server", f"127.0.0.1:{port}"),
                *("--data", str(part), "--partition-id", str(i), "--max-wait", "240"),
                *("--state-dir", str(tmp_path / "state")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"client-{i}.log").open("wb"),
        )
        for i, part in enumerate(parts)
    ]
    try:
        deadline = time.time() + 400
        while len(_committed_rounds(tmp_path)) < 2 and time.time() < deadline:
            assert server.poll() is None, (tmp_path / "server-first.log").read_text()[-2000:]
            time.sleep(0.2)
        server.send_signal(signal.SIGKILL)
        server.wait()
        committed_before = max(_committed_rounds(tmp_path))
        resumed = _server(tmp_path, port, resume=True)
        assert resumed.wait(timeout=400) == 0, (tmp_path / "server-resume.log").read_text()[-2000:]
        result = json.loads((tmp_path / "server-resume.json").read_text())
        assert result["resumed_from_round"] == committed_before
        assert [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]  # no committed round lost
    finally:
        for process in [server, *clients]:
            if process.poll() is None:
                process.kill()
            process.wait()
