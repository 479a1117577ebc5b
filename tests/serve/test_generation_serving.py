"""`wattwise serve tiny-lm` on Ray Serve: `/v1/generate` through the ingress to continuous-batching
replicas (2 replicas, loopback, API key, tiny-lm's test preset), one server for the module.

The tests run in file order; the last one SIGKILLs the replicas, and the fixture stops the server.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.cli.run_cli import run_json
from tests.models.lm_helpers import tiny_lm  # noqa: F401
from tests.serve.sse import parse_sse
from wattwise.api import generate, serve
from wattwise.measure.generation import kv_cache_bytes
from wattwise.serve.generation_engine import ContinuousBatcher
from wattwise.serve.generation_http import event_batches
from wattwise.serve.processes import replica_processes

KEY_ENV = "WATTWISE_TEST_LM_API_KEY"
API_KEY = "lm-key-27c4"
AUTH = {"X-API-Key": API_KEY}
# Each replica's KV cache holds 300 tokens: one long request (prompt + 290) at a time, and a
# request for more than that is refused with 503 before anything is streamed.
KV_BUDGET_TOKENS = 300
LONG = {"prompt": "Return the", "max_new_tokens": 290}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lm_server(tiny_lm):  # noqa: F811 - trains tiny-lm once; the replicas load it from the cache
    from wattwise.compress.lookup_draft import build_lookup_draft

    os.environ[KEY_ENV] = API_KEY
    ray_temp_dir = tempfile.mkdtemp(prefix="wwg-", dir="/tmp")
    # A saved lookup draft (`serve --draft`): decode steps draft and verify several tokens.
    draft = Path(tempfile.mkdtemp(prefix="wwg-draft-", dir="/tmp")) / "draft"
    build_lookup_draft(tiny_lm, seconds=3.0).save(draft)
    server = serve(
        "tiny-lm",
        block=False,
        port=_free_port(),
        replicas=2,
        max_batch_size=8,
        api_key_env=KEY_ENV,
        kv_cache_budget_bytes=KV_BUDGET_TOKENS * kv_cache_bytes(tiny_lm.module.lm, 1, 1),
        # Long enough for a request sent while every replica is dead to wait for a new one.
        request_timeout_s=180.0,
        ray_temp_dir=ray_temp_dir,
        draft=str(draft),
    )
    logs = Path(ray_temp_dir) / "session_latest" / "logs" / "serve"
    try:
        yield SimpleNamespace(url=server.url, logs=logs)
    finally:
        server.stop()


async def _consume(client: httpx.AsyncClient, url: str, body: dict, first_token=None) -> list:
    """One request's events; `first_token` (an asyncio.Event) is set at its first token."""
    received = ""
    async with client.stream("POST", f"{url}/v1/generate", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for chunk in response.aiter_text():
            received += chunk
            if first_token is not None and "event: token" in received:
                first_token.set()
    return parse_sse(received)


def _greedy_ids(prompt: str, max_new_tokens: int) -> list[int]:
    return generate("tiny-lm", prompt, max_new_tokens).token_ids


def test_streamed_tokens_equal_the_in_process_greedy_output(lm_server):
    prompts = [("Return the", 24), ("The default value of the argument is", 17), ("If", 9)]

    async def send_all() -> list[list]:
        async with httpx.AsyncClient(headers=AUTH, timeout=60) as client:
            bodies = [{"prompt": p, "max_new_tokens": n} for p, n in prompts]
            return await asyncio.gather(*(_consume(client, lm_server.url, b) for b in bodies))

    for (prompt, max_new_tokens), events in zip(prompts, asyncio.run(send_all()), strict=True):
        expected = generate("tiny-lm", prompt, max_new_tokens)
        tokens = [data for event, data in events if event == "token"]
        assert [t["token_id"] for t in tokens] == expected.token_ids
        assert [t["index"] for t in tokens] == list(range(len(tokens)))
        assert "".join(t["text"] for t in tokens) == expected.text
        assert events[-1][0] == "done" and events[-1][1]["tokens"] == len(tokens)


def test_requests_with_the_served_draft_stream_the_targets_tokens(lm_server, tiny_lm):  # noqa: F811
    # One request at a time here; the batched case is covered by the engine tests.
    import torch

    from wattwise.models.generation import greedy_generate

    for prompt in ("Return the", "The default value of the argument is"):
        body = {"prompt": prompt, "max_new_tokens": 40, "stop_at_eos": False}
        with httpx.Client(headers=AUTH, timeout=60) as client:
            response = client.post(f"{lm_server.url}/v1/generate", json=body)
        events = parse_sse(response.text)
        tokens = [data["token_id"] for event, data in events if event == "token"]
        ids = torch.tensor([tiny_lm.extra["tokenizer"](prompt)["input_ids"]])
        alone, _ = greedy_generate(tiny_lm.module, ids, 40, stop_at_eos=False)
        assert tokens == alone[0].tolist()
        done = events[-1][1]
        assert events[-1][0] == "done" and (done["finish_reason"], done["tokens"]) == ("length", 40)
        assert 0 <= done["accepted_tokens"] <= done["drafted_tokens"] and done["drafted_tokens"]
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(headers=AUTH, timeout=30) as client:
        text = client.get(f"{lm_server.url}/metrics").text
    counters = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    drafted = counters["wattwise_drafted_tokens_total"]
    assert drafted > 0 and 0 <= counters["wattwise_accepted_draft_tokens_total"] <= drafted


def test_kv_cache_full_is_a_503_with_retry_after_and_bad_requests_422(lm_server):
    url = lm_server.url
    too_big = {"prompt": "Return the", "max_new_tokens": KV_BUDGET_TOKENS + 50}
    response = httpx.post(f"{url}/v1/generate", json=too_big, headers=AUTH, timeout=60)
    assert response.status_code == 503 and "KV cache full" in response.json()["detail"]
    assert response.headers["retry-after"]
    past_context = {"prompt": "Return the " * 300, "max_new_tokens": 200}
    response = httpx.post(f"{url}/v1/generate", json=past_context, headers=AUTH, timeout=60)
    assert response.status_code == 422 and "positions" in response.json()["detail"]
    for body in ({"prompt": ""}, {"prompt": "x", "max_new_tokens": 0}, {"text": "x"}):
        response = httpx.post(f"{url}/v1/generate", json=body, headers=AUTH, timeout=60)
        assert response.status_code == 422
    assert httpx.post(f"{url}/v1/generate", json=LONG).status_code == 401


def test_model_info_and_openapi_describe_generation(lm_server):
    info = httpx.get(f"{lm_server.url}/v1/model", headers=AUTH).json()
    assert info["generates"] and info["context_tokens"] > LONG["max_new_tokens"]
    assert info["example_prompt"]
    schema = httpx.get(f"{lm_server.url}/openapi.json").json()
    operation = schema["paths"]["/v1/generate"]["post"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"503", "422", "401"} <= set(operation["responses"])
    assert "GenerateRequest" in schema["components"]["schemas"]
    assert "/v1/predict" in schema["paths"]  # the encoder API is still there


def test_loadtest_generation_mode_has_no_failure_and_reports_percentiles(lm_server):
    result = run_json(
        "loadtest",
        lm_server.url,
        "--generate",
        "--rate",
        "8",
        "--duration",
        "3s",
        "--max-new-tokens-range",
        "8,64",
        "--prompt-words-range",
        "2,12",
        "--api-key-env",
        KEY_ENV,
        in_process=True,
    )
    assert result["requests"] > 0 and result["failed"] == 0, result["errors_by_status"]
    # The load test asks for stop_at_eos=false: every stream is as long as it asked (≥ 8).
    assert result["output_tokens"] >= 8 * result["requests"] and not result["stop_at_eos"]
    for measure in ("ttft_ms", "tpot_ms"):
        p50, p95, p99 = (result[f"{measure}_p{q}"] for q in (50, 95, 99))
        assert math.isfinite(p99) and 0 < p50 <= p95 <= p99
    assert result["output_tokens_per_s"] > 0
    text = httpx.get(f"{lm_server.url}/metrics", headers=AUTH).text
    assert 'wattwise_requests_total{path="/v1/generate",status="200"}' in text


def test_client_disconnect_cancels_the_call_on_the_replica(lm_server):
    """Clients leave after their first token: Ray Serve cancels the replica's `generate` call
    (its access log says CANCELLED), whose stream then cancels the request (test below).

    A test-preset request decodes its 290 tokens in about 0.2 s, so on a busy machine a
    cancel can lose the race (the call then ends OK; 6 of 6 calls were cancelled in ~18 ms in
    one run at load average 9): up to eight clients leave, one by one, until a CANCELLED shows.
    """
    body = {**LONG, "stop_at_eos": False}

    async def first_token_then_leave() -> str:
        client = httpx.AsyncClient(headers=AUTH, timeout=60)
        url = f"{lm_server.url}/v1/generate"
        async with client, client.stream("POST", url, json=body) as response:
            async for chunk in response.aiter_text():
                return chunk  # leaving the block closes the connection
        return ""

    def cancelled_calls() -> int:
        logs = "".join(p.read_text() for p in lm_server.logs.glob("replica_*ModelReplica*.log"))
        return logs.count("generate CANCELLED")

    for _ in range(8):
        assert "event: token" in asyncio.run(first_token_then_leave())
        time.sleep(0.5)  # the replica's log line follows its call's end
        if cancelled_calls():
            return
    for _ in range(120):  # Ray writes its access log asynchronously: up to 60 s more
        if cancelled_calls():
            return
        time.sleep(0.5)
    raise AssertionError("no replica call was cancelled when its client left")


def test_closing_a_replica_stream_cancels_its_request(tiny_lm):  # noqa: F811
    """What a client disconnect does on the replica: Ray closes the replica's generator."""
    engine = ContinuousBatcher(tiny_lm.module, 4)
    stream = engine.submit([5, 6, 7], max_new_tokens=200)
    engine.step()  # prefill and one decode step: two tokens

    async def first_then_close() -> list:
        events = event_batches(SimpleNamespace(tokenizer=tiny_lm.extra["tokenizer"]), stream)
        first = await anext(events)
        await events.aclose()
        return first

    assert [event for event, _ in asyncio.run(first_then_close())] == ["token", "token"]
    engine.step()
    assert stream.finished and stream.finish_reason == "cancelled"
    assert len(stream.tokens) < 200 and engine.idle and engine.reserved_bytes == 0


def test_stop_at_eos_false_generates_exactly_max_new_tokens_without_end_of_text(tiny_lm):  # noqa: F811
    probe = ContinuousBatcher(tiny_lm.module, 2)
    first = probe.submit([5, 6, 7], max_new_tokens=1)
    probe.run_until_idle()
    engine = ContinuousBatcher(tiny_lm.module, 2, eos_token_id=first.tokens[0])
    stops = engine.submit([5, 6, 7], max_new_tokens=6)
    goes_on = engine.submit([5, 6, 7], max_new_tokens=6, stop_at_eos=False)
    engine.run_until_idle()
    assert stops.tokens == first.tokens and stops.finish_reason == "eos"
    assert len(goes_on.tokens) == 6 and goes_on.finish_reason == "length"
    # it never chooses the end-of-text token, as generate(min_new_tokens=...) does
    assert first.tokens[0] not in goes_on.tokens


@pytest.mark.slow
def test_replica_sigkill_cuts_started_streams_with_an_error_and_retries_unstarted_ones(lm_server):
    """Both replicas die while two long streams run: a stream that had tokens ends with an
    error event (or with `done` if it finished first), never silently; a request sent after
    the kill has streamed nothing yet, so it is retried until a new replica answers it."""
    victims = replica_processes(os.getpid())
    assert len(victims) == 2
    late = {"prompt": "The default", "max_new_tokens": 12}

    async def scenario():
        async with httpx.AsyncClient(headers=AUTH, timeout=240) as client:
            started = [asyncio.Event(), asyncio.Event()]
            running = [
                asyncio.create_task(_consume(client, lm_server.url, LONG, first))
                for first in started
            ]
            await asyncio.gather(*(first.wait() for first in started))
            for victim in victims:
                victim.send_signal(signal.SIGKILL)
            after = await _consume(client, lm_server.url, late)
            return await asyncio.gather(*running), after

    streams, after = asyncio.run(scenario())
    expected = _greedy_ids(LONG["prompt"], LONG["max_new_tokens"])
    outcomes = []
    for events in streams:
        ids = [data["token_id"] for event, data in events if event == "token"]
        final, data = events[-1]
        assert final in ("done", "error") and [e for e, _ in events[:-1]] == ["token"] * len(ids)
        assert ids == expected[: len(ids)]  # no token lost, repeated or reordered before a cut
        if final == "error":
            assert "stream cut" in data["detail"] and data["tokens"] == len(ids)
        else:
            assert ids == expected
        outcomes.append(final)
    assert "error" in outcomes, "both streams ended before the kill; nothing was cut"
    assert [d["token_id"] for e, d in after if e == "token"] == _greedy_ids(**late)
    assert after[-1][0] == "done"
    text = httpx.get(f"{lm_server.url}/metrics", headers=AUTH).text
    assert f"wattwise_streams_cut_total {outcomes.count('error')}" in text
