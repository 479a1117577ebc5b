"""The ingress side of `POST /v1/generate`: open a replica's token stream, retried until its first
token, then relay it as server-sent events.

Zero-loss retry holds for a request until a token has been sent to its client: the ingress waits
for the first token before it answers (so TTFT includes any retry), and a replica that dies, is
unreachable or has no KV-cache room before then is replaced by another call through the handle
(Ray Serve's router picks a live replica), within the request's deadline. After the first token
a retry could repeat or skip tokens the client already has, so a stream cut then (the replica
died mid-stream) ends with an explicit `error` event, never a silent truncation. A full KV cache
everywhere answers 503 with Retry-After, before anything is streamed. When the client goes away,
closing the relay cancels the replica's stream, and the replica drops the request at its next
decode step.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from wattwise.serve.generation_http import Event, sse
from wattwise.serve.http_app import ServiceUnavailable
from wattwise.serve.metrics import ServeMetrics
from wattwise.serve.retries import RetrySchedule, is_replica_failure

FINAL_EVENTS = ("done", "error")


@dataclass
class OpenedStream:
    """A replica's stream that has produced its first token.

    Attributes:
        first: the first message's events (tokens, perhaps already the final event).
        upstream: the rest (Ray Serve's `DeploymentResponseGenerator`, lists of events).
        ended: the final event (`done` or `error`) was relayed.
    """

    first: list[Event]
    upstream: Any
    ended: bool = False
    closed: bool = False

    def close(self) -> None:
        """Cancel the replica's stream unless it ended (once): the client went away."""
        if not self.ended and not self.closed:
            self.closed = True
            self.upstream.cancel()


class RelayResponse(StreamingResponse):
    """The relayed SSE response; however it ends (the client gone included) the replica's
    stream is cancelled. The relay generator alone would not always see the cancellation: one
    suspended at a `yield` (its chunk being sent) is closed only when it is collected."""

    def __init__(self, opened: OpenedStream, metrics: ServeMetrics) -> None:
        super().__init__(
            relay_stream(opened, metrics),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
        self.opened = opened

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.opened.close()


async def open_stream(
    streaming_handle: Any,
    request: dict[str, Any],
    timeout_s: float,
    metrics: ServeMetrics,
) -> OpenedStream:
    """Call `generate(**request)` on a model replica until one streams a first token.

    Retried on replica failure, and for up to BACKPRESSURE_PATIENCE_S while every KV cache
    tried is full; ServiceUnavailable (503) after that or past `timeout_s`, HTTPException 422
    for a request no replica can take (empty prompt, past the model's context).
    """
    schedule = RetrySchedule(timeout_s)
    while True:
        remaining = schedule.remaining_s()
        if remaining <= 0:
            raise ServiceUnavailable("no model replica started this generation within the deadline")
        upstream = streaming_handle.generate.remote(**request)
        try:
            first = await asyncio.wait_for(upstream.__anext__(), remaining)
        except asyncio.CancelledError:  # the client went away before its first token
            upstream.cancel()
            raise
        except TimeoutError as error:
            upstream.cancel()
            raise ServiceUnavailable(
                f"no first token within {timeout_s:g} s; retry later or ask for fewer tokens"
            ) from error
        except StopAsyncIteration:
            first = None  # the replica ended the stream without a word: try another
        except Exception as error:
            if not is_replica_failure(error):
                raise
            first = None
        if first and first[0][0] != "rejected":
            return OpenedStream(first, upstream)
        if first:  # rejected: the replica said why
            status, detail = first[0][1]["status"], first[0][1]["detail"]
            if status != 503:
                raise HTTPException(status, detail)
            if schedule.overloaded_too_long():
                raise ServiceUnavailable(detail)
        metrics.retries += 1
        await schedule.back_off()


async def relay_stream(opened: OpenedStream, metrics: ServeMetrics) -> AsyncIterator[str]:
    """The opened stream as SSE text, ending with `done` or an `error` event, always.

    Closing this generator (the client disconnected) cancels the replica's stream.
    """
    tokens = 0

    def events(batch: list[Event]) -> str:
        nonlocal tokens
        opened.ended = opened.ended or any(event in FINAL_EVENTS for event, _ in batch)
        tokens += sum(event == "token" for event, _ in batch)
        for event, data in batch:
            if event == "done" and "drafted_tokens" in data:
                metrics.drafted_tokens += data["drafted_tokens"]
                metrics.accepted_draft_tokens += data["accepted_tokens"]
        return "".join(sse(event, data) for event, data in batch)

    try:
        yield events(opened.first)
        if not opened.ended:
            async for batch in opened.upstream:
                yield events(batch)
                if opened.ended:
                    break
    except Exception as error:  # noqa: BLE001 - the replica died mid-stream: say so in-band
        if not opened.ended:
            opened.ended = True
            metrics.streams_cut += 1
            reason = (str(error).splitlines() or [""])[0][:200]
            detail = f"stream cut: {type(error).__name__}: {reason}"
            yield sse("error", {"detail": detail, "tokens": tokens})
    finally:
        metrics.generated_tokens += tokens
        opened.close()  # unless it ended: the client went away, free the replica's batch slot
    if not opened.ended:
        opened.ended = True
        metrics.streams_cut += 1
        yield sse("error", {"detail": "stream cut: the replica closed it early", "tokens": tokens})
