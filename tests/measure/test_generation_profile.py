"""Generation profile of a causal LM: TTFT, time per token, tokens/s, KV cache, energy source."""

from __future__ import annotations

import math

from tests.models.lm_helpers import tiny_lm  # noqa: F401
from wattwise.measure.generation import profile_generation


def test_generation_profile_reports_costs_with_their_sources(tiny_lm):  # noqa: F811
    profile = profile_generation(
        tiny_lm, batch_sizes=(1, 2), prompt_tokens=8, new_tokens=6, repetitions=2
    )
    assert set(profile.tokens_per_s) == {"1", "2"}
    assert all(rate > 0 for rate in profile.tokens_per_s.values())
    assert profile.ttft_ms.p50_ms > 0
    assert profile.time_per_output_token_ms.repetitions == 2 * 5  # 5 gaps per 6 tokens
    config = tiny_lm.module.lm.config
    assert profile.kv_cache_bytes == 2 * config.n_layer * 2 * (8 + 6) * config.n_embd * 4
    assert profile.energy_source in ("nvml", "rapl", "estimate")
    assert math.isfinite(profile.energy_j_per_1k_tokens) and profile.energy_j_per_1k_tokens > 0
    if profile.energy_source == "estimate":
        assert profile.energy_uncertainty_pct > 0 and "estimated" in profile.energy_method


def test_kv_cache_bytes_equal_the_cache_a_forward_fills(tmp_path):
    # Grouped key/value heads and a head width set apart from hidden_size / heads (head_dim)
    # must both count: the serving engine reserves KV memory by this figure.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from wattwise.measure.generation import kv_cache_bytes

    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
    )
    lm = LlamaForCausalLM(config).eval()
    with torch.inference_mode():
        cache = lm(torch.randint(0, 64, (3, 10)), use_cache=True).past_key_values
    filled = sum(
        layer.keys.numel() * layer.keys.element_size()
        + layer.values.numel() * layer.values.element_size()
        for layer in cache.layers
    )
    assert kv_cache_bytes(lm, 3, 10) == filled
