"""Run a model on Ray Serve: start (or join) Ray, deploy, wait until ready, drain on stop.

The application is one ingress replica (HTTP, validation, retries, metrics) in front of N model
replicas. Both deployments roll with `max_surge_percent=100`: on a swap, every new replica is
up and passing health checks before an old one is told to drain, so capacity never dips.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

import httpx

from wattwise.errors import ConfigError, WattwiseError
from wattwise.serve.grpc_ingress import grpc_options
from wattwise.serve.runtime import RayRuntime, start_ray
from wattwise.serve.settings import APP_NAME, ServeSettings
from wattwise.serve.signature import ModelSignature, describe_model

READY_TIMEOUT_S = 300.0
# Replicas finish what they hold before they exit (Ray Serve's graceful shutdown).
GRACEFUL_SHUTDOWN_S = 20.0
MIN_ONGOING_PER_REPLICA = 32
HEAD_NODE_RESOURCE = "node:__internal_head__"
# When every model replica holds its 2 joined calls (`model_calls_per_replica`), Ray's router
# sleeps before asking again, doubling from 25 ms up to 0.5 s (ray 2.60 `request_router.py`):
# a joined call could wait most of a second for a replica that was free after a few ms, which
# made joining's p99 1.4-1.5x longer. From 2 ms up to 20 ms, the p99 equalled one call per
# request in the same run (886/731 vs 890/712 ms) at 0.63-0.76x the CPU per request.
INGRESS_ROUTER_BACKOFF = {
    "RAY_SERVE_ROUTER_RETRY_INITIAL_BACKOFF_S": "0.002",
    "RAY_SERVE_ROUTER_RETRY_MAX_BACKOFF_S": "0.02",
}


class ServeError(WattwiseError):
    """The application failed to deploy or to become ready."""


def model_signature(settings: ServeSettings) -> ModelSignature:
    """Load the model here once: fails fast with one line, and tells the API its schema."""
    import gc

    from wattwise.compress.variant import open_model

    loaded = open_model(settings.model, settings.model_options(), serving_only=True)
    signature = describe_model(loaded)
    if settings.draft:
        check_draft_fits(loaded, settings.draft)
    del loaded
    gc.collect()
    return signature


def check_draft_fits(loaded, draft: str) -> None:
    """A ConfigError when `--draft` cannot serve this model: not a causal LM, or a lookup
    draft built for another vocabulary."""
    from wattwise.models.generation import is_causal_lm
    from wattwise.models.lookup_draft import load_lookup_draft

    if not is_causal_lm(loaded):
        raise ConfigError(f"--draft is for causal LMs; {loaded.name} does not generate")
    vocabulary = loaded.module.lm.config.get_text_config().vocab_size
    built_for = load_lookup_draft(draft).vocabulary
    if built_for and built_for != vocabulary:
        raise ConfigError(
            f"--draft {draft} was built for a {built_for}-token vocabulary, {loaded.name} has "
            f"{vocabulary}; build one from this model (optimize --objective tokens_per_s)"
        )


def build_application(settings: ServeSettings, signature: ModelSignature) -> Any:
    """The Ray Serve application (ingress bound to the model deployment)."""
    from ray.serve.config import BackpressureConfig

    from wattwise.serve.ingress import Ingress
    from wattwise.serve.replica import ModelReplica

    settings = deployed_settings(settings, signature)
    scaling = settings.autoscaling_config()
    count = {"autoscaling_config": scaling} if scaling else {"num_replicas": settings.replicas}
    model = ModelReplica.options(
        **count,
        max_ongoing_requests=model_calls_per_replica(settings),
        max_queued_requests=settings.max_ongoing_requests + settings.max_queued_requests,
        health_check_period_s=settings.health_check_period_s,
        health_check_timeout_s=settings.health_check_timeout_s,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        max_surge_percent=100,
        ray_actor_options={"num_cpus": settings.replica_cpus},
    ).bind(settings.to_dict(), signature.to_dict())
    return Ingress.options(
        num_replicas=1,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests,
        backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1),
        health_check_period_s=settings.health_check_period_s,
        health_check_timeout_s=settings.health_check_timeout_s,
        graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_S,
        max_surge_percent=100,
        # On the head node, with the Serve controller and the GCS (already a single point of
        # failure): losing a worker node then never takes the ingress and its retries with it.
        # Ray Train pins its state actor the same way.
        ray_actor_options={
            "num_cpus": 0,
            "resources": {HEAD_NODE_RESOURCE: 0.001},
            "runtime_env": {"env_vars": INGRESS_ROUTER_BACKOFF},
        },
    ).bind(model, settings.to_dict(), signature.to_dict(), settings.api_key_digest())


def deployed_settings(settings: ServeSettings, signature: ModelSignature) -> ServeSettings:
    """`settings` as deployed for this model: a causal LM's replica holds many `/v1/generate`
    streams at once (continuous batching), so its calls are never joined (joined calls get two
    per replica, which would cap the streams)."""
    if signature.generates:
        return dataclasses.replace(settings, ingress_batching=False)
    return settings


def model_calls_per_replica(settings: ServeSettings) -> int:
    """Ray Serve's `max_ongoing_requests` for a model replica.

    One call per request: room for a full batch plus the next one filling while the first
    computes; never tiny, because Ray's router backs off when every replica is at its limit.
    Joined calls (at most `MAX_JOINED_CALLS` in flight): two per replica, one computing and one
    queued, so the rest wait at the router and go to whichever replica frees up first instead
    of queueing behind an uneven neighbour (measured, 2 rounds: p99 1,362–1,472 → 743–1,296 ms,
    and 0.95× the CPU per request).
    """
    if settings.joins_requests():
        return 2
    return max(2 * settings.max_batch_size, MIN_ONGOING_PER_REPLICA)


def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll `/readyz` until every replica answers; ServeError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as error:
            last = str(error)
        time.sleep(0.25)
    raise ServeError(f"server at {url} not ready after {timeout_s:.0f} s ({last}); see Ray logs")


@dataclass
class Server:
    """A running `wattwise serve`; stop it with `stop()` (or use it as a context manager).

    Attributes:
        settings: what was deployed.
        signature: the served model's interface.
        runtime: the Ray connection (owns the cluster unless `--address` was given).
        url: base URL of the HTTP API.
    """

    settings: ServeSettings
    signature: ModelSignature
    runtime: RayRuntime
    url: str
    _stopped: bool = False

    @property
    def grpc_target(self) -> str | None:
        """HOST:PORT of the gRPC ingress (`--grpc-port`), or None when it is off."""
        if self.settings.grpc_port is None:
            return None
        return f"{_url_host(self.settings.host)}:{self.settings.grpc_port}"

    @property
    def ray_address(self) -> str:
        """GCS address another driver passes as `--address` (e.g. to swap the model)."""
        return self.runtime.address

    def swap(self, model: str) -> ModelSignature:
        """Roll to `model`: new replicas ready before the old ones drain; returns its signature."""
        settings = dataclasses.replace(self.settings, model=model).checked()
        self.signature = deploy(settings)
        self.settings = settings
        wait_ready(self.url)
        return self.signature

    def stop(self) -> None:
        """Drain in-flight requests, delete the app, and stop the Ray instance we started."""
        if self._stopped:
            return
        self._stopped = True
        from ray import serve

        try:
            if self.runtime.owns_cluster:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            self.runtime.shutdown()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def deploy(settings: ServeSettings) -> ModelSignature:
    """Deploy (or roll) the app on the connected Ray cluster; returns the model's signature."""
    from ray import serve

    signature = model_signature(settings)
    application = build_application(settings, signature)
    try:
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
    except RuntimeError as error:
        raise ServeError(
            f"deploying {settings.model} failed: {str(error).splitlines()[0]}; see Ray logs"
        ) from error
    return signature


def start_server(settings: ServeSettings, signature: ModelSignature | None = None) -> Server:
    """Start Ray (or join `settings.address`), deploy, and return once `/readyz` says ready.

    `signature`: the model's, when the caller already loaded it (model_signature).
    """
    settings = settings.checked()
    if not settings.address:
        check_port_free(settings.host, settings.port)
        if settings.grpc_port is not None:
            check_port_free(settings.host, settings.grpc_port)
    if signature is None:
        signature = model_signature(settings)  # before Ray: a bad spec costs no Ray start
    runtime = start_ray(settings)
    try:
        from ray import serve

        serve.start(
            http_options={"host": settings.host, "port": settings.port},
            **({"grpc_options": grpc_options(settings.grpc_port)} if settings.grpc_port else {}),
        )
        url = f"http://{_url_host(settings.host)}:{settings.port}"
        server = Server(settings, signature, runtime, url)
        application = build_application(settings, signature)
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        wait_ready(url)
        return server
    except BaseException:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown() if runtime.owns_cluster else serve.delete(APP_NAME)
        runtime.shutdown()
        raise


def check_port_free(host: str, port: int) -> None:
    """ConfigError when something already listens on host:port.

    Ray Serve's HTTP proxy binds with SO_REUSEPORT, so a second `wattwise serve` on the same
    port would start, and the kernel would then split connections between the two servers.
    A plain bind (no SO_REUSEPORT) fails on a listening port; a port in TIME_WAIT passes.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"port {port} on {host} is already in use ({error.strerror}; another wattwise "
                "serve?); stop that server or choose another --port"
            ) from error


def swap_model(settings: ServeSettings) -> ModelSignature:
    """Roll the app running on the cluster at `settings.address` to `settings.model`."""
    if not settings.address:
        raise ConfigError("--swap needs --address (the Ray address `wattwise serve` printed)")
    settings = settings.checked()
    runtime = start_ray(settings)
    try:
        signature = deploy(settings)
        wait_ready(f"http://{_url_host(settings.host)}:{settings.port}")
        return signature
    finally:
        runtime.shutdown()


STOP_POLL_S = 0.2


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def run_until_signalled(server: Server) -> None:
    """Block until SIGTERM or Ctrl-C, then drain and stop (a second signal is not needed).

    The handler only appends to a list: a handler runs in the main thread between two
    bytecodes, and one that called `threading.Event.set()` while the main thread sat inside
    `Event.wait()` holding the event's lock deadlocked the server for good (seen: a
    `wattwise serve` that ignored SIGINT and SIGTERM, stuck in `Condition.__enter__`)."""
    signals: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        signals.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not signals:
            time.sleep(STOP_POLL_S)  # after a signal, the loop sees it within STOP_POLL_S
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
