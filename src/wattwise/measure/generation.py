"""What generating text costs: time to first token, time per output token, tokens/s at batch 1
and batched, peak memory (KV cache included), energy per 1,000 generated tokens.

Every timed `generate` call runs greedy with the KV cache, forced to `new_tokens` tokens (EOS
suppressed) so runs compare. Energy comes from the same sources as `profile`
(`measure/energy.py`: NVML, RAPL, else a stated estimate with its band).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from wattwise.measure.energy import detect_energy_source
from wattwise.measure.latency import LatencyStats
from wattwise.measure.memory import track_peak_memory
from wattwise.models.generation import greedy_generate


@dataclass
class GenerationProfile:
    """Generation costs. Units are in the field names.

    Attributes:
        prompt_tokens, new_tokens: tokens per prompt and generated per request.
        repetitions: timed `generate` calls per batch size.
        ttft_ms: time to first token at batch 1 (prefill + first decode step).
        time_per_output_token_ms: gaps between consecutive tokens at batch 1.
        tokens_per_s: generated tokens per second (all sequences), keyed by batch size.
        peak_memory_bytes: peak memory growth during the largest batch (weights excluded,
            activations and KV cache included), read by `memory_source`.
        kv_cache_bytes: the KV cache's size at the end of the largest batch, computed from
            its shapes (2 × layers × batch × tokens × width × bytes per element).
        energy_j_per_1k_tokens: energy per 1,000 generated tokens at the largest batch.
        energy_source / energy_uncertainty_pct / energy_method: where that figure comes from.
    """

    prompt_tokens: int
    new_tokens: int
    repetitions: int
    batch_sizes: list[int]
    ttft_ms: LatencyStats
    time_per_output_token_ms: LatencyStats
    tokens_per_s: dict[str, float]
    peak_memory_bytes: int
    memory_source: str
    kv_cache_bytes: int
    energy_j_per_1k_tokens: float
    energy_source: str
    energy_uncertainty_pct: float
    energy_method: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def kv_cache_bytes(lm: torch.nn.Module, batch_size: int, tokens: int) -> int:
    """Keys and values of every layer for `batch_size` sequences of `tokens`, in bytes."""
    config = lm.config.get_text_config()
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    # A config may set the head width apart from hidden_size / heads (Qwen3, Gemma: head_dim).
    head_width = getattr(config, "head_dim", None) or config.hidden_size // heads
    element = next(lm.parameters()).element_size()
    return 2 * layers * batch_size * tokens * kv_heads * head_width * element


def profile_generation(
    loaded,
    batch_sizes: tuple[int, ...] = (1, 8),
    prompt_tokens: int = 16,
    new_tokens: int = 64,
    repetitions: int = 3,
    device: str = "cpu",
) -> GenerationProfile:
    """Measure greedy generation of a causal LM (a `LoadedModel` whose module has `.lm`).

    Example:
        profile_generation(load_model("tiny-lm"), batch_sizes=(1, 8)).tokens_per_s["8"]
    """
    model = loaded.module
    source = detect_energy_source(device)
    prompts = loaded.task.prompts(max(batch_sizes), prompt_tokens)
    # Warm-up: the first call pays one-off costs (allocations, kernel selection).
    greedy_generate(model, prompts[0].to(device), 2, stop_at_eos=False)
    ttft, gaps, tokens_per_s = [], [], {}
    energy_per_1k, peak, memory_source = float("nan"), 0, ""
    for batch_size in sorted(batch_sizes):
        batch = torch.cat(prompts[:batch_size]).to(device)
        generated, seconds = 0, 0.0
        with track_peak_memory(device) as memory:
            token = source.start()
            for _ in range(repetitions):
                _, stats = greedy_generate(model, batch, new_tokens, stop_at_eos=False)
                generated += stats.new_tokens * batch_size
                seconds += stats.seconds
                if batch_size == 1:
                    ttft.append(stats.ttft_ms)
                    gaps.extend(stats.token_times_ms)
            reading = source.stop(token)
        tokens_per_s[str(batch_size)] = generated / seconds
        energy_per_1k = reading.energy_j / generated * 1000
        peak, memory_source = memory.peak_bytes, memory.source
    largest = max(batch_sizes)
    if not ttft:  # batch 1 not asked for: time tokens at the smallest batch instead
        _, stats = greedy_generate(model, prompts[0].to(device), new_tokens, stop_at_eos=False)
        ttft, gaps = [stats.ttft_ms], stats.token_times_ms
    return GenerationProfile(
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        repetitions=repetitions,
        batch_sizes=sorted(batch_sizes),
        ttft_ms=LatencyStats.from_samples(ttft),
        time_per_output_token_ms=LatencyStats.from_samples(gaps or [float("nan")]),
        tokens_per_s=tokens_per_s,
        peak_memory_bytes=peak,
        memory_source=memory_source,
        kv_cache_bytes=kv_cache_bytes(model.lm, largest, prompt_tokens + new_tokens),
        energy_j_per_1k_tokens=energy_per_1k,
        energy_source=source.name,
        energy_uncertainty_pct=source.uncertainty_pct,
        energy_method=source.method,
    )
