"""/v1/generate: SSE tokens, 503 when the KV cache is full, an error event when a stream is cut."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from fastapi import FastAPI

from tests.models.lm_helpers import tiny_lm  # noqa: F401
from tests.serve.sse import parse_sse
from wattwise.serve.generation_engine import ContinuousBatcher
from wattwise.serve.generation_http import GenerationService, add_generation_routes, relay_events


def _app(tiny_lm, budget_tokens: int):  # noqa: F811
    tokenizer = tiny_lm.extra["tokenizer"]
    engine = ContinuousBatcher(tiny_lm.module, 4)
    engine.kv_cache_budget_bytes = engine.bytes_per_token * budget_tokens
    service = GenerationService(engine, tokenizer)
    app = FastAPI()
    add_generation_routes(app, service)
    return app, service


async def _post_all(app, bodies: list[dict]) -> list[httpx.Response]:
    """POST each body and read the whole response through httpx's ASGI transport. (Starlette's
    TestClient, whose app runs in a portal thread, cut 4 of 40 SSE bodies short here while the
    app had sent every event; this transport cut 0 of 40, and so do real servers below.)"""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [await client.post("/v1/generate", json=body) for body in bodies]


def test_generate_streams_tokens_then_done_and_503_when_kv_full(tiny_lm):  # noqa: F811
    app, service = _app(tiny_lm, budget_tokens=64)
    try:
        # stop_at_eos off: how many tokens come must not depend on what the model says.
        bodies = [
            {"prompt": "Return the", "max_new_tokens": 6, "stop_at_eos": False},
            {"prompt": "Return", "max_new_tokens": 100},
        ]
        response, too_big = asyncio.run(_post_all(app, bodies))
        assert response.status_code == 200
        events = parse_sse(response.text)
        assert [e for e, _ in events] == ["token"] * 6 + ["done"]
        done = events[-1][1]
        assert done["finish_reason"] == "length" and done["tokens"] == 6
        assert done["prompt_tokens"] >= 1 and done["prompt_tokens_dropped"] == 0
        assert too_big.status_code == 503 and "KV cache full" in too_big.json()["detail"]
        assert too_big.headers["retry-after"] == "1"
    finally:
        service.close()


def test_a_prompt_past_the_context_is_refused_or_cut_from_the_front(tiny_lm):  # noqa: F811
    app, service = _app(tiny_lm, budget_tokens=1 << 20)
    try:
        context = service.engine.max_positions
        prompt = " ".join(["Return the value of the object"] * context)  # far past the context
        prompt_tokens = len(service.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        new_tokens = context - 4
        bodies = [
            {"prompt": prompt, "max_new_tokens": new_tokens},
            {"prompt": prompt, "max_new_tokens": new_tokens, "truncate_prompt": True},
        ]
        refused, cut = asyncio.run(_post_all(app, bodies))
        assert refused.status_code == 422
        assert "truncate_prompt" in refused.json()["detail"]
        assert cut.status_code == 200
        done = parse_sse(cut.text)[-1]
        assert done[0] == "done"
        assert done[1]["prompt_tokens"] == 4
        assert done[1]["prompt_tokens_dropped"] == prompt_tokens - 4
    finally:
        service.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_stream_cut_by_a_replica_kill_ends_with_an_error_event(tiny_lm):  # noqa: F811
    port = _free_port()
    code = (
        "import uvicorn; from wattwise.serve.generation_http import build_generation_app; "
        f"uvicorn.run(build_generation_app('tiny-lm'), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    replica = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)

        async def consume() -> str:
            received = []
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"prompt": "Return the value", "max_new_tokens": 400, "stop_at_eos": False}
                async with client.stream("POST", f"{url}/v1/generate", json=body) as response:
                    async for chunk in relay_events(response.aiter_text()):
                        received.append(chunk)
                        if "event: token" in chunk and replica.poll() is None:
                            replica.send_signal(signal.SIGKILL)  # the replica dies mid-stream
            return "".join(received)

        events = parse_sse(asyncio.run(consume()))
        assert events[0][0] == "token"
        assert events[-1][0] == "error" and "stream cut" in events[-1][1]["detail"]
        assert not any(e == "done" for e, _ in events)
    finally:
        replica.kill()
        replica.wait()


def test_generate_with_a_served_lookup_draft_streams_the_same_tokens(tiny_lm, tmp_path):  # noqa: F811
    # `serve --draft DIR`: the service loads the saved draft; its decode steps speculate, and
    # its streamed tokens equal those served without a draft.
    from wattwise.compress.lookup_draft import build_lookup_draft
    from wattwise.errors import ConfigError
    from wattwise.serve.generation_http import generation_service
    from wattwise.serve.server import check_draft_fits
    from wattwise.serve.settings import ServeSettings

    build_lookup_draft(tiny_lm, seconds=3.0).save(tmp_path / "draft")
    check_draft_fits(tiny_lm, str(tmp_path / "draft"))
    body = {"prompt": "Return the", "max_new_tokens": 40, "stop_at_eos": False}
    streamed = []
    for draft in (None, str(tmp_path / "draft")):
        service = generation_service(tiny_lm, 4, draft=draft)
        app = FastAPI()
        add_generation_routes(app, service)
        try:
            (response,) = asyncio.run(_post_all(app, [body]))
        finally:
            service.close()
        events = parse_sse(response.text)
        streamed.append([data["token_id"] for event, data in events if event == "token"])
        done = events[-1][1]
        assert events[-1][0] == "done" and (done["finish_reason"], done["tokens"]) == ("length", 40)
        if draft:
            assert service.engine.speculative_rounds > 0
            assert 0 <= done["accepted_tokens"] <= done["drafted_tokens"]
            assert done["drafted_tokens"] > 0
        else:
            assert "drafted_tokens" not in done
    assert len(streamed[0]) == 40 and streamed[0] == streamed[1]
    with pytest.raises(ConfigError, match="not a saved lookup draft"):
        ServeSettings.from_options("tiny-lm", draft=str(tmp_path)).checked()
