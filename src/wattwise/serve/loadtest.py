"""`wattwise loadtest`: N concurrent clients post to `/v1/predict` for a while; count everything.

One asyncio loop with httpx runs every client, so the generator costs little CPU per request;
on a 2-core machine it still competes with the server, so its own CPU time is reported.
The body is the server's own example (`GET /v1/model`), repeated `inputs_per_request` times,
serialized once. With `grpc_target` the same bodies go to the gRPC ingress
(`wattwise.v1.Wattwise/Predict`, `serve --grpc-port`) instead; errors are then counted by gRPC
status name ("UNAVAILABLE").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from wattwise.durations import parse_duration
from wattwise.errors import ConfigError

# Above this share of one core, the client is the likely bottleneck of its own test.
CLIENT_BOUND_CORE_FRACTION = 0.8
REPLICA_SAMPLE_S = 0.5


@dataclass(frozen=True)
class LoadtestResult:
    """What one load test saw from the client side.

    Attributes:
        url: server base URL.
        grpc_target: HOST:PORT the requests went to over gRPC (None: HTTP to `url`).
        clients: concurrent clients (each sends its next request when the last one finished).
        duration_s: measured wall-clock seconds of the load.
        inputs_per_request: inputs in each request body.
        requests: responses and failures in total.
        succeeded: 2xx responses.
        errors_by_status: count per HTTP status ("503") or failure kind ("timeout", "connect").
        throughput_per_s: 2xx responses per second.
        inputs_per_s: inputs answered per second (throughput × inputs per request).
        latency_ms_p50, latency_ms_p95, latency_ms_p99, latency_ms_max: of 2xx responses.
        client_cpu_s: CPU seconds the load generator itself used (it shares the machine).
        error_examples: the first response body (truncated) seen for each error status.
        notes: caveats about this run (e.g. a client-bound generator).
        replicas_over_time: (seconds since the load began, healthy model replicas) read from
            `/readyz` every `REPLICA_SAMPLE_S` (autoscaling shows here).
    """

    url: str
    clients: int
    duration_s: float
    inputs_per_request: int
    requests: int
    succeeded: int
    errors_by_status: dict[str, int]
    throughput_per_s: float
    inputs_per_s: float
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_max: float
    client_cpu_s: float
    error_examples: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    replicas_over_time: list[tuple[float, int]] = field(default_factory=list)
    grpc_target: str | None = None

    def replica_changes(self) -> list[tuple[float, int]]:
        """`replicas_over_time` reduced to the first sample and every change."""
        changes: list[tuple[float, int]] = []
        for at_s, count in self.replicas_over_time:
            if not changes or changes[-1][1] != count:
                changes.append((at_s, count))
        return changes

    @property
    def failed(self) -> int:
        """Requests that did not get a 2xx."""
        return self.requests - self.succeeded

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {**asdict(self), "failed": self.failed}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(fraction * len(sorted_values) - 1e-9)))
    return sorted_values[rank - 1]


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    """The X-API-Key header from the variable `api_key_env` names (none when not given)."""
    if not api_key_env:
        return {}
    key = os.environ.get(api_key_env)
    if not key:
        raise ConfigError(f"--api-key-env {api_key_env}: that environment variable is empty")
    return {"X-API-Key": key}


def model_info(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The server's `GET /v1/model` (its signature); ConfigError when it cannot be read."""
    try:
        response = httpx.get(f"{url}/v1/model", headers=headers, timeout=10.0)
    except httpx.HTTPError as error:
        raise ConfigError(f"cannot reach {url}: {error}; is `wattwise serve` running?") from error
    if response.status_code != 200:
        raise ConfigError(f"{url}/v1/model answered {response.status_code}; check URL and key")
    return response.json()


def example_body(url: str, inputs_per_request: int, headers: dict[str, str]) -> bytes:
    """The server's example input, repeated: `{"inputs": [example] * n}` as JSON bytes."""
    example = model_info(url, headers)["example"]
    return json.dumps({"inputs": [example] * inputs_per_request}).encode()


def client_bound_notes(client_cpu_s: float, elapsed_s: float) -> list[str]:
    """A caveat when the load generator itself used most of a core (it shares the machine)."""
    if elapsed_s <= 0 or client_cpu_s / elapsed_s <= CLIENT_BOUND_CORE_FRACTION:
        return []
    return [
        f"the load generator used {client_cpu_s / elapsed_s:.0%} of a core: on a small "
        "machine the client, not the server, may limit throughput"
    ]


# One request: None when it succeeded, else (error key, first 300 characters of its body).
Send = Callable[[bytes], Awaitable[tuple[str, str] | None]]


def http_sender(client: httpx.AsyncClient, url: str) -> Send:
    """POST the body to `url`; errors keyed by HTTP status or failure kind."""

    async def send(body: bytes) -> tuple[str, str] | None:
        try:
            response = await client.post(url, content=body)
        except httpx.TimeoutException:
            return "timeout", ""
        except httpx.HTTPError as error:
            await asyncio.sleep(0.05)  # a refused connection would otherwise spin
            return type(error).__name__, ""
        if 200 <= response.status_code < 300:
            return None
        return str(response.status_code), response.text[:300]

    return send


def grpc_sender(channel: Any, api_key: str | None, timeout_s: float) -> Send:
    """Call `wattwise.v1.Wattwise/Predict` on a grpc.aio channel; errors keyed by status."""
    import grpc

    from wattwise.serve.grpc_ingress import PREDICT_METHOD

    call = channel.unary_unary(PREDICT_METHOD)
    metadata = (("x-api-key", api_key),) if api_key else None

    async def send(body: bytes) -> tuple[str, str] | None:
        try:
            await call(body, timeout=timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                await asyncio.sleep(0.05)  # a refused connection would otherwise spin
            return error.code().name, (error.details() or "")[:300]
        return None

    return send


async def _client_loop(
    send: Send,
    body: bytes,
    stop_at: float,
    latencies_ms: list[float],
    errors: Counter,
    examples: dict[str, str],
) -> None:
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        failure = await send(body)
        if failure is None:
            latencies_ms.append((time.perf_counter() - started) * 1000.0)
        else:
            errors[failure[0]] += 1
            if failure[1]:
                examples.setdefault(failure[0], failure[1])


async def _sample_replicas(url: str, started: float, stop_at: float, samples: list) -> None:
    """Healthy replica count from `/readyz` (its own connection) until `stop_at`."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < stop_at:
            try:
                body = (await client.get(f"{url}/readyz")).json()
                samples.append((round(time.monotonic() - started, 2), body["replicas_healthy"]))
            except (httpx.HTTPError, ValueError, KeyError):
                pass  # a missed sample; the load's own errors are counted elsewhere
            await asyncio.sleep(REPLICA_SAMPLE_S)


async def _run(
    url: str,
    clients: int,
    duration_s: float,
    body: bytes,
    headers: dict,
    timeout_s: float,
    grpc_target: str | None = None,
):
    latencies_ms: list[float] = []
    errors: Counter = Counter()
    examples: dict[str, str] = {}
    replicas: list[tuple[float, int]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {**headers, "content-type": "application/json"}
    async with contextlib.AsyncExitStack() as stack:
        if grpc_target:
            import grpc

            channel = await stack.enter_async_context(grpc.aio.insecure_channel(grpc_target))
            send = grpc_sender(channel, headers.get("X-API-Key"), timeout_s)
        else:
            client = await stack.enter_async_context(
                httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers)
            )
            send = http_sender(client, f"{url}/v1/predict")
        started = time.monotonic()
        stop_at = started + duration_s
        await asyncio.gather(
            _sample_replicas(url, started, stop_at, replicas),
            *(
                _client_loop(send, body, stop_at, latencies_ms, errors, examples)
                for _ in range(clients)
            ),
        )
        elapsed = time.monotonic() - started
    return latencies_ms, errors, examples, elapsed, replicas


def run_loadtest(
    url: str,
    clients: int = 64,
    duration: str | float = "30s",
    inputs_per_request: int = 1,
    api_key_env: str | None = None,
    timeout_s: float = 60.0,
    body: bytes | None = None,
    grpc_target: str | None = None,
) -> LoadtestResult:
    """Drive `url` with `clients` concurrent clients for `duration`; see `LoadtestResult`.

    `grpc_target` (HOST:PORT of `serve --grpc-port`): send the requests over gRPC instead;
    `url` still gives the example body and the replica count.

    Example:
        result = run_loadtest("http://127.0.0.1:8000", clients=64, duration="30s")
        print(result.throughput_per_s, result.latency_ms_p99, result.errors_by_status)
    """
    if clients < 1 or inputs_per_request < 1:
        raise ConfigError("--clients and --inputs-per-request must be ≥ 1")
    duration_s = parse_duration(duration)
    url = url.rstrip("/")
    headers = auth_headers(api_key_env)
    payload = body if body is not None else example_body(url, inputs_per_request, headers)
    cpu_before = cpu_seconds()
    latencies_ms, errors, examples, elapsed, replicas = asyncio.run(
        _run(url, clients, duration_s, payload, headers, timeout_s, grpc_target)
    )
    latencies_ms.sort()
    succeeded = len(latencies_ms)
    client_cpu_s = cpu_seconds() - cpu_before
    notes = client_bound_notes(client_cpu_s, elapsed)
    throughput = succeeded / elapsed if elapsed > 0 else 0.0
    return LoadtestResult(
        url=url,
        clients=clients,
        duration_s=elapsed,
        inputs_per_request=inputs_per_request,
        requests=succeeded + sum(errors.values()),
        succeeded=succeeded,
        errors_by_status=dict(sorted(errors.items())),
        throughput_per_s=throughput,
        inputs_per_s=throughput * inputs_per_request,
        latency_ms_p50=percentile(latencies_ms, 0.50),
        latency_ms_p95=percentile(latencies_ms, 0.95),
        latency_ms_p99=percentile(latencies_ms, 0.99),
        latency_ms_max=latencies_ms[-1] if latencies_ms else float("nan"),
        client_cpu_s=client_cpu_s,
        error_examples=examples,
        notes=notes,
        replicas_over_time=replicas,
        grpc_target=grpc_target,
    )


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
