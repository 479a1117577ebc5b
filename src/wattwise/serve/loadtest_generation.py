"""`wattwise loadtest --generate`: Poisson arrivals of `/v1/generate` requests with mixed prompt
and output lengths; time to first token, time per output token, output tokens/s.

Open loop, as a real service sees it: requests arrive at exponential intervals (mean 1/rate,
seeded) whether or not earlier ones finished, so an overloaded server shows as a growing TTFT
rather than as a slower client. Each request's prompt is a run of words from held-out stdlib
docstrings (`tasks.language`, the text tiny-lm never trained on) and its `max_new_tokens` is drawn
uniformly from a range, both seeded. A stream counts as ok only if it ends with `done`; an
`error` event counts as "cut", a stream that just stops as "truncated". Requests ask for
`stop_at_eos: false` unless told otherwise, so the output lengths are the ones drawn (a small
model ends most texts early at its end-of-text token; vLLM's benchmark ignores EOS likewise),
and `truncate_prompt: true`: the load generator cannot know how many tokens a run of words is
for the served tokenizer, so a prompt that would not fit the model's context beside its
`max_new_tokens` loses its first tokens instead of failing (counted in `truncated_prompts`).

Definitions (those of vLLM's serving benchmark): TTFT is from sending the request to its first
token event; time per output token (TPOT) is a request's (last token − first token) / (tokens −
1), for requests of at least 2 tokens; output tokens/s is every token received over the test's
wall-clock time (first arrival to last stream end).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from wattwise.durations import parse_duration
from wattwise.errors import ConfigError
from wattwise.serve.loadtest import (
    auth_headers,
    client_bound_notes,
    cpu_seconds,
    model_info,
    percentile,
)


@dataclass(frozen=True)
class GenerationLoadtestResult:
    """What one generation load test saw from the client side.

    Attributes:
        url: server base URL.
        rate_per_s: mean request arrivals per second (Poisson).
        arrivals_s: how long requests kept arriving.
        duration_s: measured wall-clock seconds, first arrival to the last stream's end.
        max_new_tokens_range, prompt_words_range: inclusive ranges the requests drew from.
        seed: of the arrival times, prompts and lengths.
        stop_at_eos: whether streams could end early at the end-of-text token.
        requests: requests sent.
        succeeded: streams that ended with `done`.
        errors_by_status: count per HTTP status ("503"), "cut" (an `error` event), "truncated"
            (ended without a final event), "timeout" or a transport error's name.
        output_tokens: tokens received, from every stream.
        truncated_prompts: ok streams whose prompt the server shortened to fit the context.
        output_tokens_per_s: output_tokens / duration_s.
        ttft_ms_p50, ttft_ms_p95, ttft_ms_p99: time to first token of the ok streams.
        tpot_ms_p50, tpot_ms_p95, tpot_ms_p99: time per output token of the ok streams.
        client_cpu_s: CPU seconds the load generator itself used.
        error_examples: the first body or detail seen for each error kind (truncated).
        notes: caveats about this run.
    """

    url: str
    rate_per_s: float
    arrivals_s: float
    duration_s: float
    max_new_tokens_range: tuple[int, int]
    prompt_words_range: tuple[int, int]
    seed: int
    stop_at_eos: bool
    requests: int
    succeeded: int
    errors_by_status: dict[str, int]
    output_tokens: int
    output_tokens_per_s: float
    ttft_ms_p50: float
    ttft_ms_p95: float
    ttft_ms_p99: float
    tpot_ms_p50: float
    tpot_ms_p95: float
    tpot_ms_p99: float
    client_cpu_s: float
    truncated_prompts: int = 0
    error_examples: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Requests whose stream did not end with `done`."""
        return self.requests - self.succeeded

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {**asdict(self), "failed": self.failed}


@dataclass
class _Stream:
    """One request as the client saw it."""

    sent_s: float
    token_times_s: list[float] = field(default_factory=list)
    outcome: str = "truncated"  # "ok", an HTTP status, "cut", "timeout", ...
    detail: str = ""
    prompt_tokens_dropped: int = 0


def parse_range(text: str | tuple[int, int], flag: str) -> tuple[int, int]:
    """ "16,256" (or a pair) → (16, 256); ConfigError unless 1 ≤ low ≤ high."""
    try:
        low, high = (int(part) for part in text.split(",")) if isinstance(text, str) else text
    except ValueError as error:
        raise ConfigError(f"{flag} {text!r}: give LOW,HIGH, e.g. 16,256") from error
    if not 1 <= low <= high:
        raise ConfigError(f"{flag} {text!r}: need 1 ≤ LOW ≤ HIGH")
    return low, high


def prompt_words() -> list[str]:
    """Words of the held-out docstring paragraphs, in order."""
    from wattwise.tasks.language import docstring_paragraphs

    return " ".join(docstring_paragraphs()["test"]).split()


def plan_requests(
    rate_per_s: float,
    arrivals_s: float,
    max_new_tokens_range: tuple[int, int],
    prompt_words_range: tuple[int, int],
    seed: int,
    stop_at_eos: bool = False,
) -> list[tuple[float, dict[str, Any]]]:
    """(arrival second, request body) for every request: Poisson arrivals, seeded lengths."""
    rng, words, plan, at_s = random.Random(seed), prompt_words(), [], 0.0
    while True:
        at_s += rng.expovariate(rate_per_s)
        if at_s > arrivals_s:
            return plan
        count = rng.randint(*prompt_words_range)
        start = rng.randrange(0, max(1, len(words) - count))
        body = {
            "prompt": " ".join(words[start : start + count]),
            "max_new_tokens": rng.randint(*max_new_tokens_range),
            "stop_at_eos": stop_at_eos,
            "truncate_prompt": True,
        }
        plan.append((at_s, body))


async def _one(client: httpx.AsyncClient, url: str, body: dict[str, Any], record: _Stream):
    event = ""
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                record.outcome = str(response.status_code)
                record.detail = (await response.aread()).decode(errors="replace")[:300]
                return
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: ") and event == "token":
                    record.token_times_s.append(time.perf_counter())
                elif line.startswith("data: ") and event in ("done", "error"):
                    record.outcome = "ok" if event == "done" else "cut"
                    data = line[len("data: ") :]
                    record.detail = data[:300]
                    if event == "done":
                        record.prompt_tokens_dropped = json.loads(data).get(
                            "prompt_tokens_dropped", 0
                        )
    except httpx.TimeoutException:
        record.outcome = "timeout"
    except httpx.HTTPError as error:
        record.outcome, record.detail = type(error).__name__, str(error)[:300]


async def _run(url: str, plan, headers: dict[str, str], timeout_s: float) -> tuple[list, float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    records: list[_Stream] = []
    tasks = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout_s, headers=headers) as client:
        started = time.perf_counter()
        for at_s, body in plan:
            delay = started + at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            record = _Stream(time.perf_counter())
            records.append(record)
            tasks.append(asyncio.create_task(_one(client, url, body, record)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return records, elapsed


def run_generation_loadtest(
    url: str,
    rate_per_s: float = 4.0,
    duration: str | float = "30s",
    max_new_tokens_range: str | tuple[int, int] = (16, 256),
    prompt_words_range: str | tuple[int, int] = (4, 64),
    seed: int = 0,
    api_key_env: str | None = None,
    timeout_s: float = 120.0,
    stop_at_eos: bool = False,
) -> GenerationLoadtestResult:
    """Send `/v1/generate` requests to `url` at `rate_per_s` (Poisson) for `duration`, wait
    for every stream to end, and summarize; see `GenerationLoadtestResult`.

    Example:
        r = run_generation_loadtest("http://127.0.0.1:8000", rate_per_s=4, duration="30s")
        print(r.ttft_ms_p99, r.tpot_ms_p50, r.output_tokens_per_s, r.failed)
    """
    if not rate_per_s > 0:
        raise ConfigError(f"--rate must be > 0 requests/s, got {rate_per_s}")
    new_tokens = parse_range(max_new_tokens_range, "--max-new-tokens-range")
    words = parse_range(prompt_words_range, "--prompt-words-range")
    arrivals_s = parse_duration(duration)
    url = url.rstrip("/")
    headers = auth_headers(api_key_env)
    info = model_info(url, headers)
    if not info.get("generates"):
        raise ConfigError(
            f"{url} serves {info.get('model')}, not a causal LM: load-test it without --generate"
        )
    context = info.get("context_tokens") or 0
    if context and new_tokens[1] >= context:
        raise ConfigError(
            f"--max-new-tokens-range {new_tokens[0]},{new_tokens[1]}: the model's context is "
            f"{context} tokens (prompt included); ask for fewer"
        )
    plan = plan_requests(rate_per_s, arrivals_s, new_tokens, words, seed, stop_at_eos)
    cpu_before = cpu_seconds()
    records, elapsed = asyncio.run(_run(f"{url}/v1/generate", plan, headers, timeout_s))
    client_cpu_s = cpu_seconds() - cpu_before
    ok = [r for r in records if r.outcome == "ok" and r.token_times_s]
    ttft_ms = sorted((r.token_times_s[0] - r.sent_s) * 1000 for r in ok)
    tpot_ms = sorted(
        (r.token_times_s[-1] - r.token_times_s[0]) * 1000 / (len(r.token_times_s) - 1)
        for r in ok
        if len(r.token_times_s) > 1
    )
    errors = Counter(r.outcome for r in records if r.outcome != "ok")
    examples: dict[str, str] = {}
    for record in records:
        if record.outcome != "ok" and record.detail:
            examples.setdefault(record.outcome, record.detail)
    tokens = sum(len(r.token_times_s) for r in records)
    return GenerationLoadtestResult(
        url=url,
        rate_per_s=rate_per_s,
        arrivals_s=arrivals_s,
        duration_s=elapsed,
        max_new_tokens_range=new_tokens,
        prompt_words_range=words,
        seed=seed,
        stop_at_eos=stop_at_eos,
        requests=len(records),
        succeeded=len(records) - sum(errors.values()),
        errors_by_status=dict(sorted(errors.items())),
        output_tokens=tokens,
        output_tokens_per_s=tokens / elapsed if elapsed > 0 else 0.0,
        ttft_ms_p50=percentile(ttft_ms, 0.50),
        ttft_ms_p95=percentile(ttft_ms, 0.95),
        ttft_ms_p99=percentile(ttft_ms, 0.99),
        tpot_ms_p50=percentile(tpot_ms, 0.50),
        tpot_ms_p95=percentile(tpot_ms, 0.95),
        tpot_ms_p99=percentile(tpot_ms, 0.99),
        client_cpu_s=client_cpu_s,
        truncated_prompts=sum(1 for r in ok if r.prompt_tokens_dropped),
        error_examples=examples,
        notes=client_bound_notes(client_cpu_s, elapsed)
        + ([] if records else ["no request arrived: raise --rate or --duration"]),
    )
