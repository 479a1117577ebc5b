"""Greedy decoding of a causal LM through transformers' `generate`: KV cache on by default,
speculative decoding through its assisted generation (`assistant_model=`).

What we add over calling `generate` directly: per-token timestamps (time to first token, time
per output token) from a streamer, and the speculative round counts (target and draft forward
passes, counted by forward hooks) that give the draft's acceptance rate, which `generate` does
not report.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from wattwise.errors import ConfigError


@dataclass
class DecodeStats:
    """One greedy generation.

    Attributes:
        new_tokens: tokens generated (prompt excluded).
        seconds: wall-clock seconds of the whole `generate` call.
        ttft_ms: milliseconds from the call to the first new token.
        token_times_ms: milliseconds between consecutive new tokens (speculative rounds emit
            several at once: their gaps are 0).
        target_forwards: forward passes of the target model.
        draft_forwards: forward passes of the draft (0 without one).
    """

    new_tokens: int
    seconds: float
    ttft_ms: float
    token_times_ms: list[float] = field(default_factory=list)
    target_forwards: int = 0
    draft_forwards: int = 0

    @property
    def tokens_per_s(self) -> float:
        """New tokens per wall-clock second."""
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted draft tokens / drafted tokens. Every verification round (one target
        forward after the prefill) yields its accepted draft tokens plus one token of the
        target's own, so accepted = new tokens − rounds; each draft forward drafts one token."""
        if not self.draft_forwards:
            return None
        rounds = max(self.target_forwards, 1)
        return max(self.new_tokens - rounds, 0) / self.draft_forwards


class _Timestamps:
    """A `generate` streamer that records when each new token arrives (the first `put` is the
    prompt)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.prompt_seen = False
        self.arrivals: list[tuple[float, int]] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.arrivals.append((time.perf_counter(), int(value.numel())))

    def end(self) -> None:
        pass


@contextmanager
def _count_forwards(module: nn.Module | None):
    counter = {"calls": 0}
    if module is None:
        yield counter
        return

    def hook(*_):
        counter["calls"] += 1

    handle = module.register_forward_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def greedy_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    draft: nn.Module | None = None,
    stop_at_eos: bool = True,
) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy tokens after `input_ids` (shape (batch, n)) and their timings.

    `model`/`draft` are `CausalLM` wrappers (their `.lm` generates). With a draft, transformers'
    assisted generation drafts tokens and the target verifies them: greedy output is the
    target's own. `stop_at_eos=False` forces exactly `max_new_tokens` (benchmarks).

    Example:
        ids, stats = greedy_generate(loaded.module, prompt_ids, 64)
        print(stats.tokens_per_s, stats.ttft_ms)
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max new tokens must be at least 1, got {max_new_tokens}")
    lm = model.lm
    if draft is not None and input_ids.shape[0] != 1:
        raise ConfigError(
            "speculative decoding runs at batch 1 (transformers' assisted generation)"
        )
    if draft is not None and not use_cache:
        raise ConfigError("speculative decoding needs the KV cache; drop --no-kv-cache")
    kwargs = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "use_cache": use_cache,
        "attention_mask": torch.ones_like(input_ids),
        "pad_token_id": lm.generation_config.pad_token_id,
    }
    if not stop_at_eos:
        kwargs["min_new_tokens"] = max_new_tokens
    if draft is not None:
        draft.lm.generation_config.num_assistant_tokens_schedule = "heuristic_transient"
        kwargs["assistant_model"] = draft.lm
    streamer = _Timestamps()
    with (
        torch.inference_mode(),
        _count_forwards(lm) as target_calls,
        _count_forwards(draft.lm if draft is not None else None) as draft_calls,
    ):
        streamer.started = time.perf_counter()
        output = lm.generate(input_ids, streamer=streamer, **kwargs)
        seconds = time.perf_counter() - streamer.started
    new_tokens = output.shape[1] - input_ids.shape[1]
    arrivals = [t for t, _ in streamer.arrivals]
    ttft_ms = (arrivals[0] - streamer.started) * 1000 if arrivals else seconds * 1000
    gaps: list[float] = []
    for (previous, _), (now, count) in zip(streamer.arrivals, streamer.arrivals[1:], strict=False):
        gaps.extend([(now - previous) * 1000] + [0.0] * (count - 1))
    stats = DecodeStats(
        new_tokens, seconds, ttft_ms, gaps, target_calls["calls"], draft_calls["calls"]
    )
    return output[:, input_ids.shape[1] :], stats


def is_causal_lm(loaded) -> bool:
    """Whether a loaded model generates: a `CausalLM` wrapper whose `.lm` has `generate`."""
    return hasattr(loaded.module, "lm") and hasattr(loaded.module.lm, "generate")


def require_causal_lm(loaded, role: str = "model") -> nn.Module:
    """The `CausalLM` of a loaded model, or a ConfigError naming what to pass instead."""
    module = loaded.module
    if not is_causal_lm(loaded):
        raise ConfigError(
            f"{role} {loaded.name!r} is not a causal language model; generate needs tiny-lm, "
            "a Hugging Face causal-LM directory or a variant of one"
        )
    return module


@dataclass
class GenerationResult:
    """`wattwise generate`: the text and what producing it took.

    Attributes:
        text: the generated continuation (prompt excluded).
        token_ids: its token ids.
        seconds / tokens_per_s / ttft_ms: wall-clock time of the run, generated tokens per
            second, milliseconds to the first token.
        time_per_output_token_ms_p50: median gap between tokens.
        draft: the draft's description, or None.
        acceptance_rate: accepted / drafted tokens (with a draft).
        target_alone_tokens_per_s / speedup: the same prompt without the draft, and the ratio
            (with a draft; measured in the same call, one after the other).
        identical_to_target: whether the drafted output equals the target's own greedy output.
    """

    model: str
    prompt: str
    text: str
    token_ids: list[int]
    new_tokens: int
    kv_cache: bool
    seconds: float
    tokens_per_s: float
    ttft_ms: float
    time_per_output_token_ms_p50: float | None
    draft: str | None = None
    acceptance_rate: float | None = None
    target_alone_tokens_per_s: float | None = None
    speedup: float | None = None
    identical_to_target: bool | None = None

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        from dataclasses import asdict

        return asdict(self)
