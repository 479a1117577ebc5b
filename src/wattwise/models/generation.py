"""Greedy decoding of a causal LM through transformers' `generate`: KV cache on by default,
speculative decoding through its assisted generation (`assistant_model=`), and compiled decode
steps (`compiled=True`: transformers' static KV cache + `CompileConfig`, i.e. torch.compile).

What we add over calling `generate` directly: per-token timestamps (time to first token, time
per output token) from a streamer, and the speculative round counts (target and draft forward
passes, counted by forward hooks) that give the draft's acceptance rate, which `generate` does
not report.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from wattwise.errors import ConfigError
from wattwise.models.decode_stats import DecodeStats, token_gaps


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


# Static caches are sized in steps of this many tokens, so prompts and outputs of nearby
# lengths share one compiled decode graph (dynamo recompiles per cache shape; `dynamic=False`
# keeps the graph specialised, which is what makes it fast).
STATIC_CACHE_STEP = 64
# Tokens the warm-up generates: the prefill's and a few compiled decode steps.
WARM_UP_TOKENS = 3


def static_cache_length(prompt_tokens: int, max_new_tokens: int) -> int:
    """The static KV cache's length for a prompt and output: their sum, rounded up to
    `STATIC_CACHE_STEP`."""
    needed = prompt_tokens + max_new_tokens
    return -(-needed // STATIC_CACHE_STEP) * STATIC_CACHE_STEP


def _compile_config(lm: nn.Module):
    """transformers' CompileConfig for `lm`'s device. On CUDA its default (inductor,
    "reduce-overhead": CUDA graphs); elsewhere inductor's default mode, which `generate` only
    uses when `_compile_all_devices` is set (it does not auto-compile off GPU)."""
    from transformers import CompileConfig

    if lm.device.type == "cuda":
        return CompileConfig()
    config = CompileConfig(mode="default")
    config._compile_all_devices = True
    return config


def _compiled_kwargs(lm: nn.Module, input_ids: torch.Tensor, max_new_tokens: int) -> dict:
    """`generate` keyword arguments for compiled decode steps: a fresh static cache of the
    bucketed length and the compile config (transformers compiles the forward on first use and
    caches it on the model)."""
    from transformers import StaticCache

    length = static_cache_length(input_ids.shape[1], max_new_tokens)
    cache = StaticCache(config=lm.config, max_cache_len=length)
    return {"past_key_values": cache, "compile_config": _compile_config(lm)}


def _warm_up_compiled(
    lm: nn.Module, input_ids: torch.Tensor, kwargs: dict, max_new_tokens: int
) -> float:
    """Run `WARM_UP_TOKENS` tokens through the compiled path with the same cache length, so
    compiling is not timed as decoding; returns its seconds. A model whose forward cannot be
    compiled or that has no static cache gets a ConfigError."""
    warm = dict(kwargs, max_new_tokens=WARM_UP_TOKENS, min_new_tokens=WARM_UP_TOKENS)
    started = time.perf_counter()
    try:
        warm.update(_compiled_kwargs(lm, input_ids, max_new_tokens))
        # Under a forward hook like the timed call's: dynamo guards on the module's hooks, and
        # a warm-up without one would leave the timed call to compile again.
        with _count_forwards(lm):
            lm.generate(input_ids, **warm)
    except Exception as error:  # any failure means: this model cannot compile
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ConfigError(
            f"compiling {type(lm).__name__}'s decode step failed ({type(error).__name__}: "
            f"{first_line[:200]}); generate without --compile"
        ) from error
    return time.perf_counter() - started


def greedy_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    draft=None,
    stop_at_eos: bool = True,
    compiled: bool = False,
) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy tokens after `input_ids` (shape (batch, n)) and their timings.

    `model`/`draft` are `CausalLM` wrappers (their `.lm` generates). With a draft, transformers'
    assisted generation drafts tokens and the target verifies them: greedy output is the
    target's own. A `LookupDraft` (n-gram tables, no network) drafts through
    `models.speculative.lookup_generate` instead. `stop_at_eos=False` forces exactly
    `max_new_tokens` (benchmarks).
    `compiled=True` decodes with transformers' static KV cache and compiled forward
    (torch.compile); the first call per cache length compiles, in an untimed warm-up reported
    as `stats.compile_s`. Greedy output is the same tokens.

    Example:
        ids, stats = greedy_generate(loaded.module, prompt_ids, 64)
        print(stats.tokens_per_s, stats.ttft_ms)
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max new tokens must be at least 1, got {max_new_tokens}")
    lm = model.lm
    if draft is not None and not isinstance(draft, nn.Module):  # a lookup draft: our own loop
        if compiled or not use_cache:
            raise ConfigError(
                "a lookup draft decodes with the eager KV cache; drop --compile and --no-kv-cache"
            )
        from wattwise.models.speculative import lookup_generate

        return lookup_generate(model, input_ids, max_new_tokens, draft, stop_at_eos)
    if draft is not None and input_ids.shape[0] != 1:
        raise ConfigError(
            "speculative decoding runs at batch 1 (transformers' assisted generation)"
        )
    if draft is not None and not use_cache:
        raise ConfigError("speculative decoding needs the KV cache; drop --no-kv-cache")
    if compiled and (draft is not None or not use_cache):
        raise ConfigError(
            "--compile compiles the KV-cached decode step; drop --draft and --no-kv-cache"
        )
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
    compile_s = 0.0
    if compiled:
        with torch.inference_mode():  # the cache's tensors too: dynamo guards on the mode
            compile_s = _warm_up_compiled(lm, input_ids, kwargs, max_new_tokens)
            kwargs.update(_compiled_kwargs(lm, input_ids, max_new_tokens))
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
    stats = DecodeStats(
        new_tokens, seconds, ttft_ms, token_gaps(streamer.arrivals), target_calls["calls"],
        draft_calls["calls"], compile_s,
    )  # fmt: skip
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
        compiled / compile_s: whether decode steps ran compiled (`--compile`) and the seconds
            the untimed warm-up that compiled them took (not in `seconds`).
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
    compiled: bool = False
    compile_s: float = 0.0

    def to_dict(self) -> dict:
        """Plain JSON-ready dict."""
        from dataclasses import asdict

        return asdict(self)
