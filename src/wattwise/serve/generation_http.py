"""`POST /v1/generate`: tokens streamed as server-sent events from the continuous batcher.

Events: `token` ({"token_id", "text", "index"}) per token, then `done` ({"finish_reason",
"tokens", "prompt_tokens", "prompt_tokens_dropped"}, plus "drafted_tokens" and
"accepted_tokens" when a lookup draft is served), or `error` ({"detail"}) when the stream is
cut (the decode loop died, the upstream replica died): a stream never just stops. A full KV
cache answers 503 with Retry-After before anything is streamed. A client that disconnects
cancels its request: it leaves the batch at the next decode step and frees its KV reservation.

One decode loop runs in a background thread (`GenerationService`); the event loop only waits on
streams, so requests join and leave while it runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from wattwise.errors import WattwiseError
from wattwise.serve.generation_engine import ContinuousBatcher, GenerationStream, KVCacheFullError

FINISHED_NORMALLY = ("length", "eos", "cancelled")


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class GenerationService:
    """A continuous batcher stepped by one background thread while work exists."""

    def __init__(self, engine: ContinuousBatcher, tokenizer) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="wattwise-decode", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.engine.idle:
                self._wake.wait(0.05)
                self._wake.clear()
                continue
            try:
                self.engine.step()
            except Exception as error:  # noqa: BLE001 - every stream must hear of it
                self.engine.fail_all(f"decode loop failed: {type(error).__name__}: {error}")

    @property
    def alive(self) -> bool:
        """Whether the decode thread runs (False after `close()`)."""
        return self._thread.is_alive()

    def submit(
        self,
        prompt: str,
        max_new_tokens: int,
        stop_at_eos: bool = True,
        truncate_prompt: bool = False,
    ) -> GenerationStream:
        """Tokenize and queue; raises KVCacheFullError (→ 503) when it does not fit.
        `truncate_prompt` keeps the prompt's last tokens when prompt + max_new_tokens would
        pass the model's context (else the engine refuses it, → 422)."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        room = self.engine.max_positions - max_new_tokens
        dropped = max(0, len(ids) - room) if truncate_prompt and room >= 1 else 0
        stream = self.engine.submit(ids[dropped:], max_new_tokens, stop_at_eos, dropped)
        self._wake.set()
        return stream

    def close(self) -> None:
        """Stop the decode thread (requests still running end with an error event)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        self.engine.fail_all("server shutting down")


Event = tuple[str, dict[str, Any]]
# After the first token, a stream waits this long for more tokens before sending what it has:
# every message costs the replica, the ingress and the proxy CPU, whatever it carries. Measured
# (tiny-lm, 1 replica, `loadtest --generate --rate 4`): time per output token p50 14.3 → 5.2 ms,
# first token p50 44 → 28 ms, the load generator's CPU halved; the first token never waits.
COALESCE_S = 0.01


async def event_batches(
    service: GenerationService, stream: GenerationStream
) -> AsyncIterator[list[Event]]:
    """The events of one request, as (event, data), in lists of what is ready at once (one
    list per wake-up: a replica sends one message per list, not per token). Cancels the
    request if the consumer goes away."""
    sent = 0
    try:
        while True:
            await asyncio.to_thread(stream.wait_for, sent, 0.5)
            if sent and not stream.finished:
                await asyncio.sleep(COALESCE_S)  # later tokens join this message
            ready: list[Event] = []
            while sent < len(stream.tokens):
                token = stream.tokens[sent]
                text = service.tokenizer.decode([token], skip_special_tokens=True)
                ready.append(("token", {"token_id": token, "text": text, "index": sent}))
                sent += 1
            if stream.finished:
                kind = "done" if stream.finish_reason in FINISHED_NORMALLY else "error"
                key = "finish_reason" if kind == "done" else "detail"
                final = {key: stream.finish_reason, "tokens": sent}
                if kind == "done":
                    final.update(
                        prompt_tokens=len(stream.prompt),
                        prompt_tokens_dropped=stream.prompt_tokens_dropped,
                    )
                if service.engine.draft is not None:
                    final.update(
                        drafted_tokens=stream.drafted_tokens,
                        accepted_tokens=stream.accepted_tokens,
                    )
                ready.append((kind, final))
            if ready:
                yield ready
            if stream.finished:
                return
    finally:
        if not stream.finished:
            stream.cancel()  # client disconnected (the generator was closed)


async def stream_events(service: GenerationService, stream: GenerationStream) -> AsyncIterator[str]:
    """The SSE events of one request; cancels it if the consumer goes away."""
    async for batch in event_batches(service, stream):
        for event, data in batch:
            yield sse(event, data)


async def relay_events(upstream: AsyncIterator[str]) -> AsyncIterator[str]:
    """Pass SSE text through; if the upstream breaks before `done`/`error`, end with an explicit
    `error` event (the replica died mid-stream) instead of a silent truncation."""
    ended = False
    try:
        async for chunk in upstream:
            ended = ended or "event: done" in chunk or "event: error" in chunk
            yield chunk
    except Exception as error:  # noqa: BLE001 - any upstream failure is reported in-band
        if not ended:
            yield sse("error", {"detail": f"stream cut: {type(error).__name__}: {error}"})
        return
    if not ended:
        yield sse("error", {"detail": "stream cut: upstream closed before the end"})


def add_generation_routes(app: Any, service: GenerationService) -> None:
    """Add `POST /v1/generate` to a FastAPI app."""
    from fastapi import Body
    from fastapi.responses import JSONResponse, StreamingResponse

    @app.post("/v1/generate")
    async def generate(
        prompt: str = Body(..., embed=True),
        max_new_tokens: int = Body(64, embed=True),
        stop_at_eos: bool = Body(True, embed=True),
        truncate_prompt: bool = Body(False, embed=True),
    ):
        try:
            stream = service.submit(prompt, max_new_tokens, stop_at_eos, truncate_prompt)
        except KVCacheFullError as error:
            return JSONResponse({"detail": str(error)}, 503, headers={"Retry-After": "1"})
        except WattwiseError as error:  # a bad request: empty prompt, too long
            return JSONResponse({"detail": str(error)}, 422)
        return StreamingResponse(stream_events(service, stream), media_type="text/event-stream")


def generation_service(
    loaded,
    max_batch_size: int = 8,
    kv_cache_budget_bytes: int = 64 * 2**20,
    draft: str | None = None,
) -> GenerationService:
    """A running continuous batcher for a loaded causal LM (ConfigError for any other model);
    `draft`: a saved lookup draft's directory (speculative decode steps)."""
    from wattwise.models.generation import require_causal_lm
    from wattwise.models.lookup_draft import load_lookup_draft

    tokenizer = loaded.extra["tokenizer"]
    engine = ContinuousBatcher(
        require_causal_lm(loaded),
        max_batch_size,
        kv_cache_budget_bytes,
        eos_token_id=tokenizer.eos_token_id,
        draft=load_lookup_draft(draft) if draft else None,
    )
    return GenerationService(engine, tokenizer)


def build_generation_app(
    model: str, max_batch_size: int = 8, kv_cache_budget_bytes: int = 64 * 2**20
) -> Any:
    """A FastAPI app serving one causal LM (any spec `load_model` accepts) on `/v1/generate`."""
    from fastapi import FastAPI

    from wattwise.compress.variant import open_model

    loaded = open_model(model)
    app = FastAPI(title=f"wattwise generation: {loaded.name}")
    service = generation_service(loaded, max_batch_size, kv_cache_budget_bytes)
    add_generation_routes(app, service)
    app.state.generation = service
    return app
