"""`wattwise serve digits-cnn` end to end: one real server (CLI subprocess, 2 replicas, loopback,
API key) shared by every test in this module, stopped by the last test.

Ray starts in 8–16 s on these machines, so the server is started once; the tests run in file
order and the last one stops it and checks that no Ray process is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from wattwise.models.registry import load_model
from wattwise.serve.loadtest import run_loadtest
from wattwise.serve.processes import alive, descendants, replica_processes

KEY_ENV = "WATTWISE_TEST_API_KEY"
API_KEY = "test-key-6d1f"
AUTH = {"X-API-Key": API_KEY}
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wattwise(*args: str) -> list[str]:
    return [sys.executable, "-c", "from wattwise.cli import main; main()", *args]


class RunningServer:
    """The server subprocess and what it printed when ready."""

    def __init__(self, process: subprocess.Popen, ready: dict, temp_dir: str, port: int, env):
        self.process = process
        self.url = ready["url"]
        self.grpc = ready.get("grpc")
        self.ray_address = ready["ray_address"]
        self.temp_dir = temp_dir
        self.port = port
        self.env = env
        self.seen: dict[int, object] = {}

    def remember_processes(self) -> None:
        """Record every process of the server's tree (to check they are gone after stop)."""
        for process in descendants(self.process.pid):
            self.seen[process.pid] = process

    def stop(self) -> int:
        if self.process.poll() is None:
            self.remember_processes()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill_leftovers(self) -> None:
        """Last resort after a failed test: only this server's own processes."""
        for process in alive(list(self.seen.values())):
            process.kill()


def _read_ready(process: subprocess.Popen) -> dict:
    """The JSON object `wattwise serve --json` prints once every replica is ready."""
    text, deadline = "", time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                raise RuntimeError(f"server exited {process.returncode}; see its serve.err")
            continue
        text += line
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            continue
    raise RuntimeError("server not ready in time")


@pytest.fixture(scope="module")
def digits():
    """The in-process digits-cnn (trains and caches it first, so the server reuses the cache)."""
    return load_model("digits-cnn")


@pytest.fixture(scope="module")
def server(digits):
    temp_dir = tempfile.mkdtemp(prefix="wwt-", dir="/tmp")
    port = _free_port()
    os.environ[KEY_ENV] = API_KEY  # for this process's load tests too
    env = {**os.environ}
    args = ["serve", "digits-cnn", "--replicas", "2", "--port", str(port)]
    args += ["--api-key-env", KEY_ENV, "--ray-temp-dir", temp_dir, "--json"]
    args += ["--grpc-port", str(_free_port())]
    # Bounded queue small enough that a burst can fill it, big enough for 64 clients.
    # (Under load Ray's router holds requests not yet assigned in this queue, so it must hold
    # all 64 clients' requests.) The ingress works on 128 at once: at 64, twice the proxy's
    # queue reached 64 during a replica's SIGKILL under 64 clients (one 503, 2 runs in 7).
    # Queue 128: with 128 ongoing + 64 queued the proxy's queue still filled (one 503) in 2 of
    # 3 full parallel suites on 2026-12-05, never with the module alone; cause not found (the
    # server then holds more requests than the 64 clients have in flight). A 400-request
    # burst still fills 128 + 128.
    args += ["--max-ongoing-requests", "128", "--max-queued-requests", "128"]
    # stderr to a file: Ray's log lines must never fill a pipe nobody reads.
    log = open(Path(temp_dir) / "serve.err", "w")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen(
        _wattwise(*args), env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    running = None
    try:
        running = RunningServer(process, _read_ready(process), temp_dir, port, env)
        running.remember_processes()
        yield running
    finally:
        log.close()
        if running is None:
            process.kill()
        else:
            running.stop()
            running.kill_leftovers()


def _digit_images(digits, count: int) -> tuple[list, torch.Tensor]:
    """`count` test-split images as 0–16 grids, and the in-process model's probabilities."""
    (images,) = digits.task.example_inputs(count)
    with torch.inference_mode():
        probabilities = torch.softmax(digits.module(images), dim=-1)
    grids = (images * 16).round().squeeze(1).tolist()
    return grids, probabilities


def test_two_hundred_requests_match_in_process_predictions(server, digits):
    grids, expected = _digit_images(digits, 200)

    async def send_all() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(headers=AUTH, timeout=30, limits=limits) as client:
            gate = asyncio.Semaphore(16)

            async def one(grid):
                async with gate:
                    return await client.post(f"{server.url}/v1/predict", json={"inputs": grid})

            return await asyncio.gather(*(one(grid) for grid in grids))

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * 200
    labels = [r.json()["predictions"][0]["label"] for r in responses]
    assert labels == expected.argmax(dim=-1).tolist()
    served = torch.tensor([r.json()["predictions"][0]["probabilities"] for r in responses])
    assert torch.allclose(served, expected, atol=1e-5)
    server.remember_processes()


def test_a_list_of_inputs_gets_one_prediction_each_in_order(server, digits):
    grids, expected = _digit_images(digits, 5)
    response = httpx.post(f"{server.url}/v1/predict", json={"inputs": grids}, headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "digits-cnn"
    assert [p["label"] for p in body["predictions"]] == expected.argmax(dim=-1).tolist()


def test_grpc_predict_matches_in_process_and_http(server, digits):
    from wattwise.serve.grpc_ingress import grpc_predict

    grids, expected = _digit_images(digits, 5)
    over_grpc = grpc_predict(server.grpc, grids, api_key=API_KEY)
    assert [p["label"] for p in over_grpc["predictions"]] == expected.argmax(dim=-1).tolist()
    served = torch.tensor([p["probabilities"] for p in over_grpc["predictions"]])
    assert torch.allclose(served, expected, atol=1e-5)
    over_http = httpx.post(f"{server.url}/v1/predict", json={"inputs": grids}, headers=AUTH)
    assert over_grpc == over_http.json()
    one = grpc_predict(server.grpc, grids[0], api_key=API_KEY)  # a single input, not a list
    assert len(one["predictions"]) == 1


def test_loadtest_over_grpc_counts_successes_and_refusals(server):
    result = run_loadtest(server.url, 8, "2s", api_key_env=KEY_ENV, grpc_target=server.grpc)
    assert result.succeeded > 0 and result.failed == 0 and result.grpc_target == server.grpc
    bad = run_loadtest(
        server.url, 2, "1s", body=b"{}", api_key_env=KEY_ENV, grpc_target=server.grpc
    )
    assert bad.succeeded == 0 and set(bad.errors_by_status) == {"INVALID_ARGUMENT"}
    assert "inputs" in bad.error_examples["INVALID_ARGUMENT"]


def _grpc_refusal(server, body: bytes, metadata=None):
    import grpc

    from wattwise.serve.grpc_ingress import PREDICT_METHOD

    with grpc.insecure_channel(server.grpc) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(PREDICT_METHOD)(body, timeout=30, metadata=metadata)
    return refused.value.code(), json.loads(refused.value.details())


def test_grpc_refusals_carry_status_codes_and_the_http_error_body(server):
    import grpc

    key = (("x-api-key", API_KEY),)
    good = json.dumps({"inputs": [[0] * 8] * 8}).encode()
    code, body = _grpc_refusal(server, good)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "API key" in body["detail"]
    code, body = _grpc_refusal(server, good, (("authorization", "Bearer not-the-key"),))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    code, body = _grpc_refusal(server, b'{"inputs": [[17, 2], [3, 4]]}', key)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and body["detail"][0]["loc"][0] == "inputs"
    code, body = _grpc_refusal(server, b"not json", key)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, body = _grpc_refusal(server, b"[" * 1_000_001, key)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "bytes" in body["detail"]
    metrics = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert 'path="/wattwise.v1.Wattwise/Predict",status="401"' in metrics
    assert 'path="/wattwise.v1.Wattwise/Predict",status="200"' in metrics


def test_missing_or_wrong_api_key_gets_401(server):
    body = {"inputs": [[0] * 8] * 8}
    assert httpx.post(f"{server.url}/v1/predict", json=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key"}
    assert httpx.post(f"{server.url}/v1/predict", json=body, headers=wrong).status_code == 401
    right = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.post(f"{server.url}/v1/predict", json=body, headers=right).status_code == 200
    assert httpx.get(f"{server.url}/metrics").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [[1, 2], [3, 4]]},  # wrong shape
        {"inputs": [[17] * 8] * 8},  # intensity above 16
        {"inputs": "a text for an image model"},
        {"inputs": [[[0] * 8] * 8] * 33},  # more inputs than --max-batch-size
        {"inputs": [[0] * 8] * 8, "extra": 1},
        {"images": []},
    ],
    ids=["shape", "range", "type", "too-many", "extra-field", "no-inputs"],
)
def test_bad_input_gets_422_with_a_message(server, body):
    response = httpx.post(f"{server.url}/v1/predict", json=body, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_malformed_json_gets_422(server):
    response = httpx.post(
        f"{server.url}/v1/predict",
        content=b'{"inputs": [[0, 1',
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 422


def test_body_over_the_limit_gets_413_declared_or_chunked(server):
    big = b'{"inputs": "' + b"x" * 1_100_000 + b'"}'
    response = httpx.post(f"{server.url}/v1/predict", content=big, headers=AUTH)
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 64_000):
            yield big[start : start + 64_000]

    response = httpx.post(f"{server.url}/v1/predict", content=chunks(), headers=AUTH)
    assert response.status_code == 413


def test_health_readiness_and_metrics(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["replicas_healthy"] == 2
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    assert 'wattwise_requests_total{path="/v1/predict",status="200"}' in text
    assert 'wattwise_requests_total{path="/v1/predict",status="422"}' in text
    assert "wattwise_request_latency_seconds_bucket" in text
    assert "wattwise_batch_size_count" in text
    assert "wattwise_batch_fill_ratio_bucket" in text
    assert "wattwise_replicas_healthy 2" in text
    # No RAPL on these machines: the energy figure must say it is an estimate.
    energy = next(line for line in text.splitlines() if line.startswith("wattwise_energy_j"))
    assert 'kind="estimate"' in energy or 'kind="measured"' in energy
    assert 'source="' in energy and "uncertainty_pct" in energy


def test_full_queue_gets_503_with_retry_after(server, digits):
    grids, _ = _digit_images(digits, 32)
    body = json.dumps({"inputs": grids}).encode()

    async def burst(count: int) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=count)
        headers = {**AUTH, "content-type": "application/json"}
        async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(client.post(f"{server.url}/v1/predict", content=body) for _ in range(count))
            )

    statuses: list[int] = []
    for _ in range(3):  # a burst normally fills the queue at once; retry if the machine idles
        responses = asyncio.run(burst(400))
        statuses += [r.status_code for r in responses]
        rejected = [r for r in responses if r.status_code == 503]
        if rejected:
            break
    assert rejected, "400 concurrent requests never filled 128 ongoing + 128 queued"
    assert all(r.headers.get("retry-after") for r in rejected)
    assert set(statuses) <= {200, 503}


def _fuzz_operation(operation, url: str, max_examples: int) -> None:
    """Valid and invalid cases for one operation; none may get a 5xx."""
    import hypothesis
    import schemathesis
    from hypothesis import strategies

    cases = strategies.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases)
    def no_server_error(case) -> None:
        response = case.call(base_url=url, headers=AUTH, timeout=30)
        assert response.status_code < 500, f"{operation.label}: {response.status_code}"

    no_server_error()


@pytest.mark.slow
def test_openapi_fuzzing_never_gets_a_5xx(server):
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz_operation(operation, server.url, max_examples=25)
        checked.append(operation.label)
    assert "POST /v1/predict" in checked


class LoadUntil:
    """Load-test the server in back-to-back rounds until `stop()` + `extra_s`, summing results.

    The load covers the whole event under test however long it takes on this machine: the
    test asserts what happened during the event, never that the event beat a clock.
    """

    def __init__(self, url: str, clients: int, extra_s: float = 3.0, round_s: float = 2.0):
        self.url, self.clients, self.extra_s, self.round_s = url, clients, extra_s, round_s
        self.rounds = []
        self._stop_at = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = json.dumps({"inputs": [_example(self.url)]}).encode()
        while self._stop_at is None or time.monotonic() < self._stop_at:
            self.rounds.append(
                run_loadtest(
                    self.url,
                    clients=self.clients,
                    duration=self.round_s,
                    api_key_env=KEY_ENV,
                    body=body,
                )
            )

    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> LoadUntil:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Keep loading `extra_s` more seconds, then wait for the last round to end."""
        self._stop_at = time.monotonic() + self.extra_s
        self._thread.join(timeout=self.extra_s + self.round_s + 120)
        assert not self._thread.is_alive(), "the load generator did not stop"

    @property
    def succeeded(self) -> int:
        return sum(r.succeeded for r in self.rounds)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rounds)

    @property
    def errors_by_status(self) -> dict[str, int]:
        errors: dict[str, int] = {}
        for result in self.rounds:
            for status, count in result.errors_by_status.items():
                errors[status] = errors.get(status, 0) + count
        return errors

    @property
    def error_examples(self) -> dict[str, str]:
        """The first response body seen for each error status (what a failure says)."""
        return {k: v for r in reversed(self.rounds) for k, v in r.error_examples.items()}


def _example(url: str):
    return httpx.get(f"{url}/v1/model", headers=AUTH, timeout=30).json()["example"]


def _wait_until_ready(url: str, replicas: int, hang_s: float = 600) -> None:
    """Wait until /readyz reports every replica healthy (`hang_s` only catches a hang)."""
    give_up = time.monotonic() + hang_s
    while time.monotonic() < give_up:
        response = httpx.get(f"{url}/readyz", timeout=30)
        if response.status_code == 200 and response.json()["replicas_healthy"] == replicas:
            return
        time.sleep(0.5)
    raise AssertionError(f"replicas not back after {hang_s:.0f} s")


@pytest.mark.slow
def test_sigkill_of_a_replica_under_64_clients_loses_no_request(server):
    victims = replica_processes(server.process.pid)
    assert len(victims) == 2
    load = LoadUntil(server.url, clients=64).start()
    while not load.rounds:  # one whole round has run: the load is really going
        assert load.running(), "the load generator stopped before its first round"
        time.sleep(0.2)
    victims[0].send_signal(signal.SIGKILL)
    # Ray Serve replaces the dead replica; the load runs until it is back, then 3 s more.
    _wait_until_ready(server.url, 2)
    load.stop()
    assert load.succeeded > 100
    assert load.failed == 0, (load.errors_by_status, load.error_examples)
    assert not alive([victims[0]])
    server.remember_processes()


@pytest.mark.slow
def test_live_swap_under_load_has_no_non_2xx(server):
    before = {p.pid for p in replica_processes(server.process.pid)}
    load = LoadUntil(server.url, clients=16).start()
    time.sleep(1.0)
    args = ["serve", "digits-cnn", "--swap", "--address", server.ray_address]
    args += ["--port", str(server.port), "--api-key-env", KEY_ENV, "--json"]
    try:
        # The timeout only catches a hang; the load waits for the swap however long it takes.
        swap = subprocess.run(
            _wattwise(*args), env=server.env, capture_output=True, text=True, timeout=900
        )
    finally:
        load.stop()  # the load covered the whole swap, and 3 s after it
    assert swap.returncode == 0, swap.stderr[-2000:]
    assert load.succeeded > 0
    assert load.failed == 0, load.errors_by_status
    after = {p.pid for p in replica_processes(server.process.pid)}
    assert len(after) == 2 and not (after & before), "replicas were not replaced"
    server.remember_processes()


@pytest.mark.slow
def test_requests_joined_at_the_ingress_get_their_own_predictions(server, digits):
    """With --ingress-batching, concurrent requests (1 to 3 inputs each) share model calls and
    each still gets exactly its own inputs' predictions, in order."""
    args = ["serve", "digits-cnn", "--swap", "--address", server.ray_address, "--json"]
    args += ["--port", str(server.port), "--api-key-env", KEY_ENV, "--ingress-batching"]
    swap = subprocess.run(
        _wattwise(*args), env=server.env, capture_output=True, text=True, timeout=900
    )
    assert swap.returncode == 0, swap.stderr[-2000:]
    grids, expected = _digit_images(digits, 120)
    starts_and_sizes = [(3 * index, 1 + index % 3) for index in range(40)]
    requests = [grids[start : start + size] for start, size in starts_and_sizes]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
            return await asyncio.gather(
                *(client.post(f"{server.url}/v1/predict", json={"inputs": r}) for r in requests)
            )

    responses = asyncio.run(send_all())
    assert [r.status_code for r in responses] == [200] * len(requests)
    served, wanted = [], []
    for (start, size), response in zip(starts_and_sizes, responses, strict=True):
        predictions = response.json()["predictions"]
        assert len(predictions) == size
        served += [p["probabilities"] for p in predictions]
        wanted += expected[start : start + size].tolist()
    assert torch.allclose(torch.tensor(served), torch.tensor(wanted), atol=1e-5)
    server.remember_processes()


def _is_loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on dual-stack sockets
    return (mapped or address).is_loopback


def test_every_server_socket_stays_on_loopback(server):
    import psutil

    tree = [psutil.Process(server.process.pid), *descendants(server.process.pid)]
    sockets = 0
    for process in alive(tree):
        for connection in process.net_connections(kind="inet"):
            sockets += 1
            assert _is_loopback(connection.laddr.ip), connection
            if connection.raddr:
                assert _is_loopback(connection.raddr.ip), connection
    assert sockets > 5


def test_stop_drains_and_leaves_no_ray_process(server):
    server.remember_processes()
    assert len(server.seen) >= 5  # gcs, raylet, controller, proxy, replicas...
    returncode = server.stop()
    assert returncode == 0
    time.sleep(1.0)
    assert not alive(list(server.seen.values()))
    leftovers = [p.pid for p in alive(_all_processes()) if server.temp_dir in " ".join(_cmdline(p))]
    assert not leftovers
    assert Path(server.temp_dir).exists()


def _all_processes():
    import psutil

    return list(psutil.process_iter())


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []
