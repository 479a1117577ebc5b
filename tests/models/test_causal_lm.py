"""tiny-lm trains and caches; user causal-LM directories load; greedy decoding is exact."""

from __future__ import annotations

import math

import pytest
import torch

from tests.models.lm_helpers import tiny_lm, write_user_causal_lm  # noqa: F401
from wattwise.errors import ConfigError, ModelLoadError
from wattwise.models.causal_lm import tiny_lm_directory
from wattwise.models.generation import greedy_generate
from wattwise.models.registry import load_model


def test_tiny_lm_trains_once_then_loads_from_cache(tiny_lm):  # noqa: F811
    weights = tiny_lm_directory() / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = load_model("tiny-lm")
    assert weights.stat().st_mtime_ns == before
    quality = again.task.evaluate(again.module)
    vocabulary = again.module.lm.config.vocab_size
    # Trained: far better than guessing uniformly over the vocabulary.
    assert math.isfinite(quality.metrics["perplexity"])
    assert quality.metrics["perplexity"] < vocabulary / 2
    assert 0 < quality.metrics["next_token_accuracy"] <= 1
    # Its 95% interval is real (blocks as units), narrower than the value itself.
    assert 0 < quality.ci95["perplexity"] < quality.metrics["perplexity"]


def test_gpt2_conv1d_becomes_linear_with_the_same_logits(tmp_path):
    from transformers import GPT2LMHeadModel

    directory = write_user_causal_lm(tmp_path / "user-lm")
    original = GPT2LMHeadModel.from_pretrained(directory).eval()
    loaded = load_model(str(directory))
    assert not any(type(m).__name__ == "Conv1D" for m in loaded.module.modules())
    ids = torch.tensor([[2, 5, 9, 11, 3]])
    with torch.inference_mode():
        assert torch.allclose(original(ids).logits, loaded.module(ids), atol=1e-5)


def test_user_causal_lm_directory_loads_and_generates(tmp_path):
    loaded = load_model(str(write_user_causal_lm(tmp_path / "user-lm")))
    assert loaded.kind == "huggingface" and loaded.extra["causal_lm"]
    prompt = torch.tensor([[2, 3, 4]])
    tokens, stats = greedy_generate(loaded.module, prompt, 8, stop_at_eos=False)
    assert tokens.shape == (1, 8) and stats.new_tokens == 8


def test_pickled_weights_are_refused(tmp_path):
    directory = write_user_causal_lm(tmp_path / "user-lm")
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(str(directory))


def test_greedy_with_and_without_kv_cache_is_identical(tiny_lm):  # noqa: F811
    for prompt in tiny_lm.task.prompts(3, 8):
        cached, _ = greedy_generate(tiny_lm.module, prompt, 24, stop_at_eos=False)
        recomputed, _ = greedy_generate(
            tiny_lm.module, prompt, 24, use_cache=False, stop_at_eos=False
        )
        assert torch.equal(cached, recomputed)


def test_greedy_with_a_wattwise_draft_is_identical_to_the_target(tiny_lm):  # noqa: F811
    from wattwise.compress.draft import build_draft

    draft = build_draft(tiny_lm, keep_layers=1, distill_steps=5)
    assert len(draft.module.lm.transformer.h) == 1
    assert any("quantized" in type(m).__module__ for m in draft.module.modules())
    for prompt in tiny_lm.task.prompts(3, 8):
        alone, _ = greedy_generate(tiny_lm.module, prompt, 24, stop_at_eos=False)
        assisted, stats = greedy_generate(
            tiny_lm.module, prompt, 24, draft=draft.module, stop_at_eos=False
        )
        assert torch.equal(alone, assisted)
        assert stats.draft_forwards > 0 and 0 <= stats.acceptance_rate <= 1


def test_speculative_decoding_at_batch_above_one_is_refused(tiny_lm):  # noqa: F811
    prompts = torch.cat(tiny_lm.task.prompts(2, 8))
    with pytest.raises(ConfigError, match="batch 1"):
        greedy_generate(tiny_lm.module, prompts, 4, draft=tiny_lm.module)
