"""The serving parts that need no Ray: settings checks, API key, schemas, body limit, metrics,
load-test arithmetic. Fast; the end-to-end behaviour is in test_server.py."""

from __future__ import annotations

import pytest
import torch
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from wattwise.durations import parse_duration
from wattwise.errors import ConfigError
from wattwise.models.registry import load_model
from wattwise.serve.guard import GuardMiddleware
from wattwise.serve.http_app import api_key_dependency
from wattwise.serve.loadtest import percentile
from wattwise.serve.metrics import ServeMetrics
from wattwise.serve.schemas import request_model
from wattwise.serve.settings import ServeSettings
from wattwise.serve.signature import array_inputs, describe_model


def test_non_loopback_bind_is_refused_without_an_api_key(monkeypatch):
    with pytest.raises(ConfigError, match="API key"):
        ServeSettings(model="digits-cnn", host="0.0.0.0").checked()
    monkeypatch.setenv("SERVE_KEY", "")
    with pytest.raises(ConfigError, match="empty"):
        ServeSettings(model="digits-cnn", host="0.0.0.0", api_key_env="SERVE_KEY").checked()
    monkeypatch.setenv("SERVE_KEY", "k")
    checked = ServeSettings(model="digits-cnn", host="0.0.0.0", api_key_env="SERVE_KEY").checked()
    assert checked.api_key_digest() and "k" not in checked.to_dict().values()
    assert ServeSettings(model="digits-cnn", host="127.0.0.1").checked().host == "127.0.0.1"


def test_api_key_is_required_and_checked():
    import hashlib

    app = FastAPI()
    digest = hashlib.sha256(b"s3cret").hexdigest()

    @app.get("/x", dependencies=[Depends(api_key_dependency(digest))])
    def protected() -> dict:
        return {"ok": True}

    client = TestClient(app)
    assert client.get("/x").status_code == 401
    assert client.get("/x", headers={"X-API-Key": "s3cret!"}).status_code == 401
    assert client.get("/x", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/x", headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.fixture(scope="module")
def digits_signature():
    return describe_model(load_model("digits-cnn"))


def test_digits_signature_takes_8x8_grids_of_0_to_16_and_scales_like_training(digits_signature):
    loaded = load_model("digits-cnn")
    assert digits_signature.request_shape == (8, 8)
    assert digits_signature.output_kind == "classes"
    (images,) = loaded.task.example_inputs(3)
    grids = (images * 16).round().squeeze(1).tolist()
    (served,) = array_inputs(digits_signature, grids)
    assert torch.allclose(served, images, atol=1e-6)


def test_request_schema_accepts_one_or_many_and_rejects_bad_shapes(digits_signature):
    request = request_model(digits_signature, max_inputs=4, max_text_chars=100)
    grid = [[0.0] * 8] * 8
    assert request(inputs=grid).inputs == grid
    assert len(request(inputs=[grid, grid]).inputs) == 2
    for bad in (
        [[0.0] * 7] * 8,
        [[16.5] * 8] * 8,
        [grid] * 5,
        [],
        "text",
        [[float("nan")] * 8] * 8,
    ):
        with pytest.raises(ValidationError):
            request(inputs=bad)


def test_body_limit_gives_413_declared_or_streamed_and_counts_statuses():
    metrics = ServeMetrics()
    app = FastAPI()

    @app.post("/v1/predict")
    async def echo(body: dict) -> dict:
        return body

    guarded = GuardMiddleware(app, metrics, max_body_bytes=100)
    client = TestClient(guarded)
    assert client.post("/v1/predict", json={"a": 1}).status_code == 200
    assert client.post("/v1/predict", content=b"x" * 101).status_code == 413
    streamed = client.post("/v1/predict", content=iter([b"{", b" " * 200, b"}"]))
    assert streamed.status_code == 413
    assert metrics.responses_by_status[("/v1/predict", 413)] == 2
    assert metrics.responses_by_status[("/v1/predict", 200)] == 1


def test_metrics_text_has_cumulative_histograms_and_labels_estimates():
    metrics = ServeMetrics()
    for seconds in (0.004, 0.02, 0.02, 3.0):
        metrics.record_response("/v1/predict", 200, seconds)
    metrics.record_response("/nope", 404, 0.001)
    result = {"energy_j": 0.5, "energy_source": "estimate", "energy_uncertainty_pct": 60.0}
    metrics.record_prediction({**result, "batch_inputs": 8, "batch_requests": 8}, 32)
    metrics.record_prediction({**result, "batch_inputs": 0, "batch_requests": 0}, 32)
    text = metrics.render(healthy_replicas=1, target_replicas=2)
    assert 'wattwise_request_latency_seconds_bucket{le="0.005"} 1' in text
    assert 'wattwise_request_latency_seconds_bucket{le="0.025"} 3' in text
    assert 'wattwise_request_latency_seconds_bucket{le="+Inf"} 4' in text
    assert 'wattwise_requests_total{path="other",status="404"} 1' in text
    assert "wattwise_batch_size_count 1" in text  # the batch counted once, not per request
    assert "wattwise_batch_fill_ratio_sum 0.25" in text
    assert "wattwise_replicas_healthy 1" in text
    assert (
        'wattwise_energy_joules_per_request{source="estimate",kind="estimate",'
        'uncertainty_pct="60"} 0.5' in text
    )


def test_durations_and_percentiles():
    assert parse_duration("30s") == 30 and parse_duration("2m") == 120
    assert parse_duration("500ms") == 0.5 and parse_duration(3) == 3
    for bad in ("-1s", "soon", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100


def test_full_queues_right_after_a_replica_failure_are_not_shed_as_overload():
    from wattwise.serve.retries import sheds_load

    assert sheds_load(2, 2, None, 3.5)  # full capacity, no failure: overload → 503
    assert sheds_load(2, 2, 10.0, 3.5)  # a failure long ago
    assert not sheds_load(2, 2, 1.0, 3.5)  # just died; the controller still counts it
    assert not sheds_load(1, 2, None, 3.5)  # a replica is being replaced


def test_sigint_and_sigterm_stop_the_server_loop_every_time():
    """`run_until_signalled` in its own process with a stand-in server: each of many signals,
    sent while the loop polls, ends it and calls `stop()` once (a handler that took a lock
    the waiting main thread held used to deadlock it)."""
    import signal
    import subprocess
    import sys
    import time

    program = (
        "from wattwise.serve.server import run_until_signalled\n"
        "class Stub:\n"
        "    def stop(self): print('stopped', flush=True)\n"
        "print('ready', flush=True)\n"
        "run_until_signalled(Stub())\n"
    )
    for index in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", program], stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        time.sleep(0.3 + 0.05 * index)  # handlers installed; different points of the loop
        sig = signal.SIGINT if index % 2 else signal.SIGTERM
        for _ in range(3):  # repeated signals must not stack up handlers or stop twice
            process.send_signal(sig)
        out, _ = process.communicate(timeout=60)  # bounds a hang only
        assert process.returncode == 0 and out.count("stopped") == 1, (process.returncode, out)
