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
