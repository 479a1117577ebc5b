"""Autoscaling end to end: under a load step the model replicas go from 1 to 2, and back to 1
once the load stops, with 0 failed requests during both (digits-cnn, loopback, one Ray)."""

from __future__ import annotations

import socket
import tempfile
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from wattwise.api import serve
from wattwise.serve.loadtest import run_loadtest

# Ray Serve pushes autoscaling metrics every 10 s by default; 1 s keeps the test short.
FAST_METRICS = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}
STEP_S = 5.0
# Bounded, but generous: a new replica took 12 s to 2 min to start on the shared 2-core machine.
PHASE_DEADLINE_S = 300.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _load_until(url: str, clients: int, replicas: int) -> list:
    """Load in steps of STEP_S until the healthy replica count reaches `replicas`."""
    results, deadline = [], time.monotonic() + PHASE_DEADLINE_S
    while time.monotonic() < deadline:
        result = run_loadtest(url, clients=clients, duration=STEP_S)
        results.append(result)
        if result.replicas_over_time and result.replicas_over_time[-1][1] == replicas:
            return results
    raise AssertionError(
        f"replicas never reached {replicas}: {[r.replica_changes() for r in results]}"
    )


@pytest.mark.slow
def test_replicas_rise_under_a_load_step_and_fall_back_with_no_failed_request(monkeypatch):
    for name, value in FAST_METRICS.items():
        monkeypatch.setenv(name, value)
    server = serve(
        "digits-cnn",
        block=False,
        port=_free_port(),
        replicas=1,
        min_replicas=1,
        max_replicas=2,
        target_ongoing_requests=2,
        upscale_delay_s=1.0,
        downscale_delay_s=5.0,
        autoscaling_look_back_s=2.0,
        max_ongoing_requests=64,
        max_queued_requests=64,
        ray_temp_dir=tempfile.mkdtemp(prefix="wwa-", dir="/tmp"),
    )
    try:
        assert httpx.get(f"{server.url}/readyz").json()["replicas_healthy"] == 1
        step = _load_until(server.url, clients=32, replicas=2)  # 32 calls ≫ 2 per replica
        calm = _load_until(server.url, clients=1, replicas=1)  # 1 call < 2 per replica
        assert sum(r.failed for r in step + calm) == 0, [r.errors_by_status for r in step + calm]
        assert sum(r.succeeded for r in step) > 100
        text = httpx.get(f"{server.url}/metrics").text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        memory = [s.value for s in families["wattwise_replica_resident_bytes"].samples]
        assert memory and all(50e6 < rss < 4e9 for rss in memory), memory
    finally:
        server.stop()
