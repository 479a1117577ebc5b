"""The gRPC ingress: `wattwise.v1.Wattwise/Predict` and `/Model` on Ray Serve's gRPC proxy.

A second protocol for programmatic clients, beside the unchanged HTTP API, because it costs
the server less CPU per request: 6.1 vs 7.8 ms for int8 MiniLM under 64 clients
(docs/serving.md, "gRPC"; `bench/serve.py --only-protocols`). The messages are
the HTTP API's JSON bodies as gRPC bytes (`{"inputs": [...]}` in, `{"model", "predictions"}`
out), so one schema serves both, and a client needs no generated protobuf code: any gRPC
library can send bytes (`grpc_predict` below, or `channel.unary_unary(PREDICT_METHOD)`).

What we add over Ray Serve's gRPC support:
- Ray 2.60 binds its gRPC proxy to `[::]` (all interfaces; no host setting). A Ray worker
  setup hook (`bind_grpc_proxy_to_host`) rewrites that address to `--host` in the proxy
  process before it binds, so the loopback default holds for gRPC too.
- The same checks as HTTP: API key (metadata `x-api-key` or `authorization: Bearer`), body size,
  validation by the same pydantic request model, 503s, and per-status metrics, mapped to gRPC
  status codes (`STATUS_CODES`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

SERVICE = "wattwise.v1.Wattwise"
PREDICT_METHOD = f"/{SERVICE}/Predict"
MODEL_METHOD = f"/{SERVICE}/Model"
SERVICER_FUNCTION = "wattwise.serve.grpc_ingress:add_wattwise_servicer_to_server"
SETUP_HOOK = "wattwise.serve.grpc_ingress.bind_grpc_proxy_to_host"
HOST_ENV = "WATTWISE_GRPC_HOST"
# Ray Serve truncates gRPC status details past 4,096 characters (HTTP/2 trailer limits).
MAX_DETAILS_CHARS = 3_500
# HTTP status → gRPC status code name, for the same outcomes (metrics keep the HTTP number).
STATUS_CODES = {
    200: "OK",
    401: "UNAUTHENTICATED",
    413: "RESOURCE_EXHAUSTED",
    422: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
    500: "INTERNAL",
}


def _raw_bytes(data: bytes) -> bytes:
    return data


def add_wattwise_servicer_to_server(servicer: Any, server: Any) -> None:
    """Register `Predict` and `Model` (bytes in, bytes out) on a gRPC server: what protoc's
    generated `add_*Servicer_to_server` would do, for Ray Serve's `grpc_servicer_functions`."""
    import grpc

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name), request_deserializer=_raw_bytes, response_serializer=_raw_bytes
        )
        for name in ("Predict", "Model")
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


def bind_grpc_proxy_to_host() -> None:
    """Ray worker setup hook: Ray Serve's gRPC proxy listens on `$WATTWISE_GRPC_HOST` instead
    of `[::]`. Runs in every worker of the job; only the proxy ever calls the patched function."""
    host = os.environ.get(HOST_ENV)
    if not host:
        return
    from ray.serve._private import default_impl

    original = default_impl.add_grpc_address
    if getattr(original, "_wattwise_host", None) == host:
        return
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"

    def add_grpc_address(server: Any, address: str) -> Any:
        return original(server, f"{host}:{address.rsplit(':', 1)[1]}")

    add_grpc_address._wattwise_host = host
    default_impl.add_grpc_address = add_grpc_address


def grpc_options(port: int) -> Any:
    """Ray Serve's gRPCOptions for our service on `port`."""
    from ray.serve.config import gRPCOptions

    return gRPCOptions(port=port, grpc_servicer_functions=[SERVICER_FUNCTION])


class JsonReply:
    """A reply Ray Serve's replica serialises with `SerializeToString()`: our JSON bytes."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def SerializeToString(self) -> bytes:
        return orjson.dumps(self.body, option=orjson.OPT_SERIALIZE_NUMPY)


class GrpcRefusal(Exception):
    """A request refused with an HTTP-equivalent status and a one-line detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail


def details_text(detail: Any) -> str:
    """`{"detail": ...}` as JSON within `MAX_DETAILS_CHARS` (Ray cuts longer status details,
    which would leave a client unparseable JSON): a long error list keeps its first entries
    and says how many were left out."""
    text = orjson.dumps({"detail": detail}).decode()
    if len(text) <= MAX_DETAILS_CHARS or not isinstance(detail, list):
        return text[:MAX_DETAILS_CHARS]
    kept = list(detail)
    while kept and len(text) > MAX_DETAILS_CHARS:
        kept.pop()
        more = {"msg": f"{len(detail) - len(kept)} more errors left out"}
        text = orjson.dumps({"detail": [*kept, more]}).decode()
    return text


def _metadata_key(context: Any) -> str:
    metadata = {key.lower(): value for key, value in context.invocation_metadata()}
    if metadata.get("x-api-key"):
        return metadata["x-api-key"]
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


def check_api_key(context: Any, digest: str | None) -> None:
    """GrpcRefusal(401) unless the call's metadata carries the key whose digest is `digest`."""
    from wattwise.serve.http_app import key_matches

    if digest is not None and not key_matches(_metadata_key(context), digest):
        raise GrpcRefusal(
            401, "missing or wrong API key: send it as x-api-key or authorization: Bearer metadata"
        )


async def answer(ingress: Any, method: str, data: bytes, context: Any) -> JsonReply:
    """Run one gRPC call on the ingress: checks, then `predict` or the model's signature.
    Refusals set the gRPC status code and details (a JSON `{"detail": ...}` like HTTP's)."""
    import grpc
    from pydantic import ValidationError

    from wattwise.serve.http_app import ServiceUnavailable, validation_details

    started, status = time.perf_counter(), 500
    try:
        check_api_key(context, ingress.api_key_digest)
        if method == MODEL_METHOD:
            status = 200
            return JsonReply(ingress.signature.description())
        if len(data) > ingress.settings.max_body_bytes:
            raise GrpcRefusal(
                413, f"request over {ingress.settings.max_body_bytes} bytes; send fewer inputs"
            )
        try:
            body = ingress.request_type.model_validate_json(data)
        except ValidationError as error:
            raise GrpcRefusal(422, validation_details(error.errors())) from error
        try:
            result = await ingress.predict(body.inputs)
        except ServiceUnavailable as error:
            raise GrpcRefusal(503, error.detail) from error
        status = 200
        return JsonReply(result)
    except GrpcRefusal as refusal:
        status = refusal.status
        context.set_code(getattr(grpc.StatusCode, STATUS_CODES[refusal.status]))
        context.set_details(details_text(refusal.detail))
        return JsonReply({"detail": refusal.detail})
    finally:
        ingress.metrics.record_response(method, status, time.perf_counter() - started)


def grpc_predict(
    target: str, inputs: Any, api_key: str | None = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """`{"model", "predictions"}` for `inputs` from a server's gRPC port (`target`: HOST:PORT).

    The Python twin of `POST /v1/predict` over gRPC; a refused call raises `grpc.RpcError`
    whose `details()` is the JSON error body.
    Example:
        grpc_predict("127.0.0.1:9000", ["a sentence"])["predictions"]
    """
    import grpc

    metadata = (("x-api-key", api_key),) if api_key else None
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(PREDICT_METHOD)
        reply = call(orjson.dumps({"inputs": inputs}), timeout=timeout_s, metadata=metadata)
    return orjson.loads(reply)
