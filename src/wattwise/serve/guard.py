"""ASGI middleware in front of the API: bounded request bodies (413) and per-status metrics.

It is plain ASGI rather than a FastAPI dependency because a body limit must act before anything
reads the body, and because 413 and 422 responses (produced before any route runs) must be
counted too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wattwise.serve.metrics import ServeMetrics

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def send_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None):
    """Send a complete JSON response over raw ASGI."""
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes (chunked uploads too)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the buffered body to the app once, then defers to the original."""
    sent = False

    async def replay_receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay_receive


class GuardMiddleware:
    """413 for bodies over `max_body_bytes`; counts every response by status."""

    def __init__(self, app, metrics: ServeMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app dies before responding

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = None
                declared = _declared_length(scope)
                if declared is None or declared <= self.max_body_bytes:
                    body = await read_bounded_body(receive, self.max_body_bytes)
                if body is None:
                    detail = f"request body over {self.max_body_bytes} bytes; send fewer inputs"
                    await send_json(counting_send, 413, {"detail": detail})
                    return
                receive = replay(body, receive)
            await self.app(scope, receive, counting_send)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.record_response(scope.get("path", ""), status, elapsed)
