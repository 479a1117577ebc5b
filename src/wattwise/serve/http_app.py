"""The FastAPI app: `POST /v1/predict`, `GET /v1/model`, `/healthz`, `/readyz`, `/metrics`, and
`POST /v1/generate` when the model is a causal LM.

No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime,
and the request/response models are built per served model (see `schemas.py`).
"""

import hashlib
import hmac
from typing import Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from wattwise.serve.guard import GuardMiddleware
from wattwise.serve.schemas import (
    ErrorBody,
    Health,
    Readiness,
    generate_request_model,
    generate_responses,
    response_model,
)
from wattwise.serve.settings import is_loopback

RETRY_AFTER_S = 1
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


class ServiceUnavailable(Exception):
    """The model cannot answer within the request's deadline (overload, no replica)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def unavailable_response(detail: str) -> JSONResponse:
    """503 with Retry-After: the client may retry the same request later."""
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def key_matches(given: str, digest: str | None) -> bool:
    """Whether `given` is the key whose SHA-256 hex digest is `digest` (empty never is).
    Constant time: fixed-length digests compared with hmac.compare_digest."""
    given_digest = hashlib.sha256(given.encode()).hexdigest()
    return bool(given) and hmac.compare_digest(given_digest, digest or "")


def api_key_dependency(digest: str | None):
    """A FastAPI dependency that checks `X-API-Key` or `Authorization: Bearer` (None: open)."""
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def check(
        key: str | None = Security(key_header),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),
    ) -> None:
        given = key or (credentials.credentials if credentials else "")
        if not key_matches(given, digest):
            raise HTTPException(
                401,
                "missing or wrong API key: send it in X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def validation_details(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's 422 details without the echoed input.

    The default handler echoes each bad value back, and a NaN or infinity in the body (Python's
    JSON parser accepts them) then fails to encode: a 500 instead of the 422. Where and why is
    what a client needs; it sent the value itself.
    """
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
        for e in errors
    ]


def add_protected_docs(app: Any, protected: list) -> None:
    """`/openapi.json` and `/docs` behind the same API-key dependency as the other routes."""
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/openapi.json", include_in_schema=False, dependencies=protected)
    async def openapi_schema() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=protected)
    async def swagger_ui():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="wattwise serve")


def add_generate_route(app: Any, ingress: Any, protected: list, auth_errors: dict) -> None:
    """`POST /v1/generate` (causal LMs): greedy tokens streamed as server-sent events."""
    settings, signature = ingress.settings, ingress.signature
    request_type = generate_request_model(signature, settings.max_text_chars)

    @app.post(
        "/v1/generate",
        response_class=StreamingResponse,
        responses={**generate_responses(), **auth_errors},
        dependencies=protected,
        summary="Continue a prompt greedily, token by token (server-sent events)",
    )
    async def generate(body: request_type) -> StreamingResponse:  # type: ignore[valid-type]
        return await ingress.generate(body.model_dump())


def build_app(ingress: Any) -> Any:
    """The ASGI app for one Ingress replica (`ingress` holds settings, signature, metrics)."""
    settings, signature = ingress.settings, ingress.signature
    request_type = ingress.request_type
    response_type = response_model(signature)
    errors = {
        413: {"model": ErrorBody, "description": "request body too large"},
        422: {"model": ErrorBody, "description": "invalid input"},
        503: {"model": ErrorBody, "description": "overloaded or no replica; see Retry-After"},
    }
    protected = []
    if ingress.api_key_digest:
        protected = [Depends(api_key_dependency(ingress.api_key_digest))]
        errors[401] = {"model": ErrorBody, "description": "missing or wrong API key"}
    # Off loopback the schema and docs pages need the key too (only the health probes are open).
    guard_docs = bool(protected) and not is_loopback(settings.host)
    app = FastAPI(
        title="wattwise serve",
        version="1",
        description=f"Predictions from {signature.model} on Ray Serve replicas.",
        **({"openapi_url": None, "docs_url": None, "redoc_url": None} if guard_docs else {}),
    )
    if guard_docs:
        add_protected_docs(app, protected)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_details(error.errors())}, status_code=422)

    @app.exception_handler(ServiceUnavailable)
    async def on_unavailable(_request, error: ServiceUnavailable) -> JSONResponse:
        return unavailable_response(error.detail)

    @app.post(
        "/v1/predict",
        response_model=response_type,
        responses=errors,
        dependencies=protected,
        summary="Predict for one input or a list of inputs",
    )
    async def predict(body: request_type) -> Response:  # type: ignore[valid-type]
        # Encoded here, once: FastAPI would re-validate every float of the response against
        # `response_type` (documentation only: the replica built it) before encoding it.
        # orjson writes the replica's float64 arrays directly, the same shortest round-trip
        # text as json.dumps of Python floats: 0.45 ms of the ingress's 3.2 ms per request
        # went to json.dumps of a 384-float embedding (py-spy, bench/serve_profile.py).
        result = await ingress.predict(body.inputs)
        content = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(content, media_type="application/json")

    auth_errors = {401: errors[401]} if 401 in errors else {}
    if signature.generates:
        add_generate_route(app, ingress, protected, auth_errors)

    @app.get("/v1/model", dependencies=protected, responses=auth_errors)
    async def model_info() -> dict:
        """The served model's signature and an example request."""
        return signature.description()

    @app.get("/healthz", response_model=Health)
    async def healthz() -> dict:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
    async def readyz():
        """Every model replica loaded and passing its health check (readiness)."""
        healthy, target = await ingress.replica_counts()
        body = {
            "ready": healthy >= target,
            "model": signature.model,
            "replicas_healthy": healthy,
            "replicas_target": target,
        }
        if healthy >= target:
            return body
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        dependencies=protected,
        responses={200: {"content": {PROMETHEUS_TEXT: {}}}, **auth_errors},
    )
    async def metrics() -> PlainTextResponse:
        """Prometheus text: requests by status, latency, batch sizes, replicas, energy."""
        healthy, target = await ingress.replica_counts()
        text = ingress.metrics.render(healthy, target)
        return PlainTextResponse(text, media_type=PROMETHEUS_TEXT)

    app.add_middleware(
        GuardMiddleware, metrics=ingress.metrics, max_body_bytes=settings.max_body_bytes
    )
    return app
