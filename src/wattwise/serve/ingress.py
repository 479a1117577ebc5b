"""The ingress deployment: HTTP in, model calls out through a DeploymentHandle, with retries.

Ray Serve fails the requests in flight on a replica that dies (HTTP 500 through its proxy).
Inference is idempotent, so the ingress retries such a call through the handle, which routes
it to a live replica, until the request's deadline (../shared/FIELD-NOTES.md: this pattern
served 960 of 960 requests while one of two replicas was SIGKILLed).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import serve
from ray.exceptions import RayError
from ray.serve.exceptions import BackPressureError, RayServeException

from wattwise.serve.generation_relay import RelayResponse, open_stream
from wattwise.serve.grpc_ingress import MODEL_METHOD, PREDICT_METHOD, answer
from wattwise.serve.http_app import ServiceUnavailable, build_app
from wattwise.serve.loopback import bind_replica_grpc_to_loopback
from wattwise.serve.metrics import ServeMetrics
from wattwise.serve.replica import count_inputs
from wattwise.serve.retries import RetrySchedule, is_replica_failure, sheds_load
from wattwise.serve.schemas import request_model
from wattwise.serve.settings import APP_NAME, MODEL_DEPLOYMENT, ServeSettings
from wattwise.serve.signature import ModelSignature

STATUS_CACHE_S = 0.5
# Joining, the ingress waits `--batch-wait-ms` for concurrent requests (this is the default
# until `__init__` sets it); the replica then waits no further and batches the joined calls
# it finds queued (`ServeSettings.replica_batch_wait_s`).
JOIN_WAIT_S = 0.005
MAX_JOINED_CALLS = 16  # enough for 8 replicas; the router holds what they cannot take


# Runs in the replica process when Ray imports this module to build the deployment.
bind_replica_grpc_to_loopback()


@serve.deployment
@serve.ingress()
class Ingress:
    """Validates requests (via the app, or `grpc_ingress` for gRPC), calls the model replicas,
    keeps the metrics."""

    def __init__(
        self,
        model: Any,
        settings: dict[str, Any],
        signature: dict[str, Any],
        api_key_digest: str | None,
    ) -> None:
        self.model = model
        self.streaming_model = model.options(stream=True)
        self.settings = ServeSettings(**settings)
        self.signature = ModelSignature.from_dict(signature)
        self.api_key_digest = api_key_digest
        self.metrics = ServeMetrics()
        self.request_type = request_model(
            self.signature, self.settings.max_batch_size, self.settings.max_text_chars
        )
        self._status: tuple[float, int] = (0.0, 0)
        self._replica_failed_at: float | None = None
        self._status_query: asyncio.Future | None = None
        self._joined_call.set_max_batch_size(self.settings.max_batch_size)
        self._joined_call.set_batch_wait_timeout_s(self.settings.batch_wait_ms / 1000.0)

    def __serve_build_asgi_app__(self):
        return build_app(self)

    # gRPC methods (Ray Serve's gRPC proxy calls the ingress method named like the RPC).
    async def Predict(self, data: bytes, grpc_context: Any) -> Any:
        """`wattwise.v1.Wattwise/Predict`: the `POST /v1/predict` JSON body as gRPC bytes."""
        return await answer(self, PREDICT_METHOD, data, grpc_context)

    async def Model(self, data: bytes, grpc_context: Any) -> Any:
        """`wattwise.v1.Wattwise/Model`: what `GET /v1/model` returns."""
        return await answer(self, MODEL_METHOD, data, grpc_context)

    async def generate(self, request: dict[str, Any]) -> Any:
        """A `/v1/generate` response (`request`: the validated body) as SSE relayed from the
        replica that streamed the first token (retried until then; see `generation_relay`)."""
        opened = await open_stream(
            self.streaming_model, request, self.settings.request_timeout_s, self.metrics
        )
        return RelayResponse(opened, self.metrics)

    async def predict(self, inputs: Any) -> dict[str, Any]:
        """One input or a list → `{"model", "predictions"}`; retried on replica failure."""
        single = not isinstance(inputs, list) or self._is_single_sample(inputs)
        samples = [inputs] if single else inputs
        self.metrics.in_flight += 1
        try:
            if self.settings.joins_requests():
                result = await self._joined_call(samples)
            else:
                result = await self._call_with_retries(samples)
        finally:
            self.metrics.in_flight -= 1
        self.metrics.record_prediction(result, self.settings.max_batch_size)
        return {"model": self.signature.model, "predictions": result["predictions"]}

    # One handle call per request costs the router, an actor call and two (de)serialisations
    # (docs/serving.md, "Where the CPU goes"); joining the requests that arrive together into
    # one call pays that once per batch. The whole joined call is retried on replica failure,
    # so zero-loss retries hold. Several joined calls run at once to keep every replica busy.
    @serve.batch(
        max_batch_size=32,
        batch_wait_timeout_s=JOIN_WAIT_S,
        max_concurrent_batches=MAX_JOINED_CALLS,
        batch_size_fn=count_inputs,
    )
    async def _joined_call(self, requests: list[list[Any]]) -> list[dict[str, Any]]:
        flat = [sample for samples in requests for sample in samples]
        result = await self._call_with_retries(flat)
        parts, start = [], 0
        for index, samples in enumerate(requests):
            count = len(samples)
            first = index == 0  # batch facts and replica stats counted once per model call
            parts.append(
                {
                    **result,
                    "predictions": result["predictions"][start : start + count],
                    "energy_j": result["energy_j"] * count / len(flat),
                    "batch_inputs": result["batch_inputs"] if first else 0,
                    "batch_requests": result["batch_requests"] if first else 0,
                    "replica": result.get("replica") if first else None,
                }
            )
            start += count
        return parts

    def _is_single_sample(self, inputs: list) -> bool:
        """A list is one array sample when its nesting depth equals the sample's rank."""
        if self.signature.input_kind == "text":
            return False
        depth, value = 0, inputs
        while isinstance(value, list) and value:
            depth, value = depth + 1, value[0]
        return depth == len(self.signature.request_shape)

    async def _call_with_retries(self, samples: list[Any]) -> dict[str, Any]:
        schedule = RetrySchedule(self.settings.request_timeout_s)
        while True:
            remaining = schedule.remaining_s()
            if remaining <= 0:
                raise ServiceUnavailable("no model replica answered within the request deadline")
            response = self.model.predict.remote(samples)
            try:
                return await asyncio.wait_for(_resolve(response), remaining)
            except TimeoutError as error:
                response.cancel()
                raise ServiceUnavailable(
                    f"model did not answer within {self.settings.request_timeout_s:g} s; "
                    "retry later or send fewer inputs"
                ) from error
            except Exception as error:
                if not is_replica_failure(error):
                    raise
                if not isinstance(error, BackPressureError):
                    self._replica_failed_at = time.monotonic()
                elif schedule.overloaded_too_long():
                    # Shed load only at full capacity: while a dead replica is being replaced
                    # the survivors' full queues are that replacement's gap, not overload.
                    healthy, target = await self.replica_counts()
                    failed_at = self._replica_failed_at
                    since = None if failed_at is None else time.monotonic() - failed_at
                    if sheds_load(healthy, target, since, self._failure_grace_s()):
                        raise ServiceUnavailable(
                            "every model replica's queue is full; retry after Retry-After"
                        ) from error
                self.metrics.retries += 1
                await schedule.back_off()

    def _failure_grace_s(self) -> float:
        """How long after a replica failure the controller may still count it as running:
        one health-check period and timeout, plus our cache of its counts."""
        settings = self.settings
        return settings.health_check_period_s + settings.health_check_timeout_s + STATUS_CACHE_S

    async def replica_counts(self) -> tuple[int, int]:
        """(healthy model replicas, target), from Serve's controller, cached briefly. One
        controller query at a time: callers that find the cache stale while a query runs wait
        for that one (a slow controller, e.g. during a replica's replacement, must not fill
        the thread pool with queries and hold every /readyz and shedding check behind them)."""
        checked_at, healthy = self._status
        if time.monotonic() - checked_at > STATUS_CACHE_S:
            if self._status_query is None or self._status_query.done():
                self._status_query = asyncio.ensure_future(asyncio.to_thread(_running_replicas))
            healthy = await asyncio.shield(self._status_query)
            self._status = (time.monotonic(), healthy)
        return healthy, self.settings.ready_replicas()


async def _resolve(response: Any) -> Any:
    return await response


def _running_replicas() -> int:
    """Model replicas in state RUNNING (Serve marks a dead or failing one otherwise)."""
    try:
        status = serve.status()
    except (RayError, RayServeException, ConnectionError):  # controller unreachable: none
        return 0
    application = status.applications.get(APP_NAME)
    if application is None or MODEL_DEPLOYMENT not in application.deployments:
        return 0
    return application.deployments[MODEL_DEPLOYMENT].replica_states.get("RUNNING", 0)
