"""Continuous batching for causal LMs: iteration-level scheduling with per-request KV caches.

Requests join and leave the running batch between decode steps (Orca, Yu et al., OSDI 2022):
each `step()` first prefills newly admitted requests, then runs ONE batched decode step for
every running request, emits one token each, and retires the finished or cancelled. A short
request therefore never waits for a long one. `policy="static"` is the classic request-level
batching, kept for comparison (bench/generate.py): a batch starts only when the previous one
ended, and a request that finished early keeps its row, computed and discarded, until the
batch's longest request ends (as transformers' `generate` does with a batch).

Why our own loop rather than transformers' `generate`: `generate` runs a fixed batch to the end.
The running batch shares one left-padded cache (`serve.ragged_kv_cache`): a decode step masks
the padding, passes each request's true position and appends one column for every row; a
request is padded in once when it joins and dropped once when it leaves. KV memory is bounded:
a request reserves `bytes per token × (prompt + max new tokens)` at admission and is refused
(`KVCacheFullError`, HTTP 503) when the reservations would exceed the budget.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from wattwise.errors import ConfigError, WattwiseError
from wattwise.measure.generation import kv_cache_bytes
from wattwise.models.causal_lm import context_tokens
from wattwise.models.speculative import verified_tokens
from wattwise.serve.draft_control import DraftController
from wattwise.serve.ragged_kv_cache import RaggedKVCache


class KVCacheFullError(WattwiseError):
    """The KV-cache budget cannot hold another request now (HTTP 503; retry later)."""


@dataclass
class GenerationStream:
    """One request: its tokens as they come, and when they came.

    Attributes:
        tokens: generated token ids so far.
        token_times_s: `time.perf_counter()` at each token.
        finished / cancelled: whether it ended, and whether by cancellation.
        finish_reason: "length", "eos", "cancelled" or an error message.
        stop_at_eos: False generates exactly max_new_tokens, never choosing the end-of-text
            token (as `generate` with `min_new_tokens`; load tests that need the output lengths
            they asked for).
        drafted_tokens / accepted_tokens: tokens a served lookup draft proposed for this
            request, and how many of them the model agreed with.
        prompt_tokens_dropped: tokens cut from the front of the prompt to fit the context.
    """

    request_id: int
    prompt: list[int]
    max_new_tokens: int
    reserved_bytes: int
    stop_at_eos: bool = True
    submitted_s: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)
    finished: bool = False
    cancelled: bool = False
    finish_reason: str = ""
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    prompt_tokens_dropped: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    def cancel(self) -> None:
        """Ask the engine to drop this request before its next decode step."""
        self.cancelled = True

    def wait_for(self, count: int, timeout_s: float | None = None) -> bool:
        """Block until more than `count` tokens exist or the stream ended."""
        with self.changed:
            return self.changed.wait_for(
                lambda: len(self.tokens) > count or self.finished, timeout=timeout_s
            )


class ContinuousBatcher:
    """Schedule greedy generation of many requests on one causal LM.

    Example:
        engine = ContinuousBatcher(load_model("tiny-lm").module, max_batch_size=8)
        stream = engine.submit([5, 6, 7], max_new_tokens=32)
        engine.run_until_idle(); print(stream.tokens)
    """

    def __init__(
        self,
        model,
        max_batch_size: int = 8,
        kv_cache_budget_bytes: int = 64 * 2**20,
        policy: str = "continuous",
        eos_token_id: int | None = None,
        draft=None,
    ) -> None:
        if policy not in ("continuous", "static"):
            raise ConfigError(f"batching policy {policy!r}: use continuous or static")
        self.lm = model.lm
        self.max_batch_size = max_batch_size
        self.kv_cache_budget_bytes = kv_cache_budget_bytes
        self.policy = policy
        self.eos_token_id = eos_token_id
        # A lookup draft (`models.lookup_draft`): a drafted step verifies every running row's
        # drafted tokens (rows keep different numbers of them: `RaggedKVCache` holes); the
        # controller drafts where it measured that drafting delivers more tokens per second.
        self.draft = draft
        self.draft_control = DraftController()
        self.speculative_rounds = 0
        self.drafted_tokens = 0
        self.accepted_tokens = 0
        self.bytes_per_token = kv_cache_bytes(self.lm, 1, 1)
        self.max_positions = context_tokens(self.lm) or 1 << 30
        self._sdpa = getattr(self.lm.config, "_attn_implementation", "") == "sdpa"
        self.waiting: deque[GenerationStream] = deque()
        self.running: list[GenerationStream] = []  # row r of `self.kv` is running[r]
        self.kv = RaggedKVCache(self._sdpa)
        self.reserved_bytes = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def submit(
        self,
        prompt: list[int],
        max_new_tokens: int,
        stop_at_eos: bool = True,
        prompt_tokens_dropped: int = 0,
    ) -> GenerationStream:
        """Queue a request; KVCacheFullError when its KV reservation does not fit now.
        `prompt_tokens_dropped`: how many tokens the caller cut from the prompt's front (it is
        reported with the stream's end)."""
        if not prompt or max_new_tokens < 1:
            raise ConfigError(
                "a generation request needs a non-empty prompt and max_new_tokens ≥ 1"
            )
        if len(prompt) + max_new_tokens > self.max_positions:
            raise ConfigError(
                f"prompt + max_new_tokens = {len(prompt) + max_new_tokens} exceeds the model's "
                f"{self.max_positions} positions; shorten the prompt, ask for fewer tokens "
                'or send "truncate_prompt": true'
            )
        need = self.bytes_per_token * (len(prompt) + max_new_tokens)
        with self._lock:
            if self.reserved_bytes + need > self.kv_cache_budget_bytes:
                raise KVCacheFullError(
                    f"KV cache full: {self.reserved_bytes + need:,} bytes needed of "
                    f"{self.kv_cache_budget_bytes:,}; retry later or ask for fewer tokens"
                )
            self.reserved_bytes += need
            stream = GenerationStream(
                next(self._ids),
                list(prompt),
                max_new_tokens,
                need,
                stop_at_eos,
                prompt_tokens_dropped=prompt_tokens_dropped,
            )
            self.waiting.append(stream)
        return stream

    @property
    def idle(self) -> bool:
        """No request waiting or running."""
        return not self.waiting and not self.running

    def _emit(self, stream: GenerationStream, token: int) -> None:
        with stream.changed:
            stream.tokens.append(token)
            stream.token_times_s.append(time.perf_counter())
            if token == self.eos_token_id and stream.stop_at_eos:
                stream.finish_reason = "eos"
            elif len(stream.tokens) >= stream.max_new_tokens:
                stream.finish_reason = "length"
            stream.changed.notify_all()

    def _finish(self, stream: GenerationStream, reason: str | None = None) -> None:
        with stream.changed:
            stream.finished = True
            stream.finish_reason = reason or stream.finish_reason
            stream.changed.notify_all()
        with self._lock:
            self.reserved_bytes -= stream.reserved_bytes

    def _admit(self) -> None:
        if self.policy == "static" and self.running:
            return
        while self.waiting and len(self.running) < self.max_batch_size:
            with self._lock:
                stream = self.waiting.popleft()
            if stream.cancelled:
                self._finish(stream, "cancelled")
                continue
            ids = torch.tensor([stream.prompt])
            output = self.lm(input_ids=ids, use_cache=True)
            self.kv.add([(k, v) for k, v, *_ in output.past_key_values])
            self.running.append(stream)
            self._emit(stream, self._greedy(output.logits[:, -1], [stream])[0])

    def _greedy(self, logits: torch.Tensor, streams: list[GenerationStream]) -> list[int]:
        """Each row's most likely token; never the end-of-text token for a request that asked
        not to stop there (as transformers' `min_new_tokens` does, so tokens match `generate`)."""
        if self.eos_token_id is not None:
            going_on = [row for row, s in enumerate(streams) if not s.stop_at_eos]
            if going_on:
                logits = logits.clone()
                logits[going_on, self.eos_token_id] = float("-inf")
        return logits.argmax(dim=-1).tolist()

    def _decode(self) -> None:
        """One step for every running row: its next token, or with a draft, its drafted
        tokens verified at once (the agreeing prefix and the model's own next token kept)."""
        started = time.perf_counter()
        drafting = self.draft is not None and self.draft_control.choose(len(self.running))
        proposals = [self._proposal(stream) if drafting else [] for stream in self.running]
        width = 1 + max(len(p) for p in proposals)
        # Rows with shorter proposals are filled with their last token: whatever the filler,
        # a row keeps only what agrees with the model's own choices.
        rows = [
            [s.tokens[-1], *p, *[s.tokens[-1]] * (width - 1 - len(p))]
            for s, p in zip(self.running, proposals, strict=True)
        ]
        output = self.lm(
            input_ids=torch.tensor(rows), use_cache=True, **self.kv.decode_inputs(width)
        )
        logits = output.logits.reshape(len(rows) * width, -1)
        predicted = self._greedy(logits, [s for s in self.running for _ in range(width)])
        kept = [
            verified_tokens(proposal, predicted[row * width : (row + 1) * width])
            for row, proposal in enumerate(proposals)
        ]
        self.kv.advance(output.past_key_values, [len(tokens) for tokens in kept])
        if self.draft is not None:
            self.draft_control.record(
                len(rows), drafting, sum(map(len, kept)), time.perf_counter() - started
            )
        for stream, proposal, tokens in zip(self.running, proposals, kept, strict=True):
            if proposal:
                self.speculative_rounds += 1
                self.drafted_tokens += len(proposal)
                self.accepted_tokens += len(tokens) - 1
                stream.drafted_tokens += len(proposal)
                stream.accepted_tokens += len(tokens) - 1
            for token in tokens:
                if stream.finished or stream.finish_reason:
                    break  # a static batch's finished rows: computed, discarded
                self._emit(stream, token)

    def _proposal(self, stream: GenerationStream) -> list[int]:
        """The draft's tokens for a running request ([] without a draft or for a finished
        row); never more than the request still needs after the model's own next token."""
        if self.draft is None or stream.finished or stream.finish_reason:
            return []
        left = stream.max_new_tokens - len(stream.tokens)
        return self.draft.propose(
            stream.prompt + stream.tokens, min(self.draft.draft_tokens, left - 1)
        )

    def _retire(self, done: list[GenerationStream]) -> None:
        """End finished or cancelled requests; take them out of the batch and its cache, or
        (static batching) keep their rows until the whole batch has ended."""
        for stream in done:
            if not stream.finished:
                self._finish(stream, "cancelled" if stream.cancelled else None)
        if self.policy == "static" and not all(s.finished for s in self.running):
            return
        gone = [s for s in self.running if s.finished]
        self.kv.remove([self.running.index(stream) for stream in gone])
        for stream in gone:
            self.running.remove(stream)

    def step(self) -> int:
        """One iteration: admit, decode one token for every running request, retire the done.
        Returns how many rows ran in the decode step."""
        with torch.inference_mode():
            self._admit()
            self._retire([s for s in self.running if s.cancelled or s.finish_reason])
            ran = len(self.running)
            if ran:
                self._decode()
            self._retire([s for s in self.running if s.finish_reason])
        return ran

    def run_until_idle(self) -> None:
        """Step until nothing waits or runs."""
        while not self.idle:
            self.step()

    def fail_all(self, reason: str) -> None:
        """End every request with an error reason (the serving loop died)."""
        for stream in list(self.running) + list(self.waiting):
            if not stream.finished:
                self._finish(stream, reason)
        self.running.clear()
        self.waiting.clear()
        self.kv = RaggedKVCache(self._sdpa)
