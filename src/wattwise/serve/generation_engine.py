"""Continuous batching for causal LMs: iteration-level scheduling with per-request KV caches.

Requests join and leave the running batch between decode steps (Orca, Yu et al., OSDI 2022):
each `step()` first prefills newly admitted requests, then runs ONE batched decode step for
every running request, emits one token each, and retires the finished or cancelled. A short
request therefore never waits for a long one. `policy="static"` admits new requests only when
the batch is empty: the classic static batching, kept for comparison (bench/generate.py).

Why our own loop rather than transformers' `generate`: `generate` runs a fixed batch to the end.
Each request keeps its own cache (per layer, keys and values of shape (1, heads, tokens, width));
a decode step left-pads them into one `DynamicCache`, masks the padding, passes each request's
true position, and splits the grown cache back. KV memory is bounded: a request reserves
`bytes per token × (prompt + max new tokens)` at admission and is refused (`KVCacheFullError`,
HTTP 503) when the reservations would exceed the budget.
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
        stop_at_eos: False generates past the end-of-text token, to exactly max_new_tokens
            (load tests that need the output lengths they asked for).
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
    cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None
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
    ) -> None:
        if policy not in ("continuous", "static"):
            raise ConfigError(f"batching policy {policy!r}: use continuous or static")
        self.lm = model.lm
        self.max_batch_size = max_batch_size
        self.kv_cache_budget_bytes = kv_cache_budget_bytes
        self.policy = policy
        self.eos_token_id = eos_token_id
        self.bytes_per_token = kv_cache_bytes(self.lm, 1, 1)
        self.max_positions = getattr(self.lm.config, "n_positions", None) or getattr(
            self.lm.config, "max_position_embeddings", 1 << 30
        )
        self.waiting: deque[GenerationStream] = deque()
        self.running: list[GenerationStream] = []
        self.reserved_bytes = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def submit(
        self, prompt: list[int], max_new_tokens: int, stop_at_eos: bool = True
    ) -> GenerationStream:
        """Queue a request; KVCacheFullError when its KV reservation does not fit now."""
        if not prompt or max_new_tokens < 1:
            raise ConfigError(
                "a generation request needs a non-empty prompt and max_new_tokens ≥ 1"
            )
        if len(prompt) + max_new_tokens > self.max_positions:
            raise ConfigError(
                f"prompt + max_new_tokens = {len(prompt) + max_new_tokens} exceeds the model's "
                f"{self.max_positions} positions; shorten the prompt or ask for fewer tokens"
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
                next(self._ids), list(prompt), max_new_tokens, need, stop_at_eos
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
            stream.cache = None
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
            stream.cache = [(k, v) for k, v, *_ in output.past_key_values]
            self._emit(stream, int(output.logits[0, -1].argmax()))
            self.running.append(stream)

    def _decode(self, batch: list[GenerationStream]) -> None:
        from transformers import DynamicCache

        lengths = [s.cache[0][0].shape[2] for s in batch]
        longest = max(lengths)
        layers = []
        for layer in range(len(batch[0].cache)):
            keys, values = [], []
            for stream, length in zip(batch, lengths, strict=True):
                key, value = stream.cache[layer]
                pad = (0, 0, longest - length, 0)  # left-pad the token axis
                keys.append(torch.nn.functional.pad(key, pad))
                values.append(torch.nn.functional.pad(value, pad))
            layers.append((torch.cat(keys), torch.cat(values)))
        mask = torch.zeros(len(batch), longest + 1, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, longest - length :] = 1
        output = self.lm(
            input_ids=torch.tensor([[s.tokens[-1]] for s in batch]),
            attention_mask=mask,
            position_ids=torch.tensor([[length] for length in lengths]),
            past_key_values=DynamicCache(ddp_cache_data=layers),
            use_cache=True,
        )
        grown = [(k, v) for k, v, *_ in output.past_key_values]
        for row, (stream, length) in enumerate(zip(batch, lengths, strict=True)):
            start = longest - length
            stream.cache = [
                (k[row : row + 1, :, start:], v[row : row + 1, :, start:]) for k, v in grown
            ]
            self._emit(stream, int(output.logits[row, -1].argmax()))

    def step(self) -> int:
        """One iteration: admit, decode one token for every running request, retire the done.
        Returns how many requests ran in the decode step."""
        with torch.inference_mode():
            self._admit()
            for stream in [s for s in self.running if s.cancelled or s.finish_reason]:
                self.running.remove(stream)
                self._finish(stream, "cancelled" if stream.cancelled else None)
            batch = list(self.running)
            if batch:
                self._decode(batch)
            for stream in [s for s in self.running if s.finish_reason]:
                self.running.remove(stream)
                self._finish(stream)
        return len(batch)

    def run_until_idle(self) -> None:
        """Step until nothing waits or runs."""
        while not self.idle:
            self.step()

    def fail_all(self, reason: str) -> None:
        """End every request with an error reason (the serving loop died)."""
        for stream in list(self.running) + list(self.waiting):
            self._finish(stream, reason)
        self.running.clear()
        self.waiting.clear()
