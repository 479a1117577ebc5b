"""Compiled decode steps (`greedy_generate(compiled=True)`, `wattwise generate --compile`)."""

from __future__ import annotations

import pytest
import torch

from tests.models.lm_helpers import tiny_lm  # noqa: F401
from wattwise.errors import ConfigError
from wattwise.models.generation import greedy_generate, static_cache_length


def test_static_cache_length_rounds_up_to_the_step():
    assert static_cache_length(16, 256) == 320
    assert static_cache_length(1, 63) == 64
    assert static_cache_length(1, 64) == 128


def test_compiled_greedy_output_is_the_eager_output(tiny_lm):  # noqa: F811
    prompts = tiny_lm.task.prompts(2, 8)
    for index, prompt in enumerate(prompts):
        eager, _ = greedy_generate(tiny_lm.module, prompt, 24, stop_at_eos=False)
        compiled, stats = greedy_generate(
            tiny_lm.module, prompt, 24, stop_at_eos=False, compiled=True
        )
        assert torch.equal(eager, compiled)
        assert stats.new_tokens == 24 and stats.target_forwards == 24
        if index == 0:
            assert stats.compile_s > 0


def test_compiling_needs_the_kv_cache_and_no_draft(tiny_lm):  # noqa: F811
    prompt = tiny_lm.task.prompts(1, 8)[0]
    with pytest.raises(ConfigError, match="--compile"):
        greedy_generate(tiny_lm.module, prompt, 4, use_cache=False, compiled=True)
    with pytest.raises(ConfigError, match="--compile"):
        greedy_generate(tiny_lm.module, prompt, 4, draft=tiny_lm.module, compiled=True)


def test_a_model_that_cannot_compile_gets_one_clear_error(tiny_lm, monkeypatch):  # noqa: F811
    def refuse(*_, **__):
        raise RuntimeError("backend exploded\nsecond line")

    monkeypatch.setattr(tiny_lm.module.lm, "get_compiled_call", refuse)
    prompt = tiny_lm.task.prompts(1, 8)[0]
    with pytest.raises(ConfigError, match=r"backend exploded.*without --compile"):
        greedy_generate(tiny_lm.module, prompt, 4, compiled=True)


def test_generate_cli_compile_json(tiny_lm):  # noqa: F811 - trains the cached model once
    from tests.cli.run_cli import assert_one_line_error, run_in_process, run_json

    result = run_json(
        "generate",
        "tiny-lm",
        "--prompt",
        "Return the",
        "--max-new-tokens",
        "6",
        "--compile",
        in_process=True,
    )
    assert result["compiled"] is True and result["compile_s"] > 0
    assert result["kv_cache"] is True and 1 <= result["new_tokens"] <= 6
    refused = run_in_process(
        "generate",
        "tiny-lm",
        "--prompt",
        "x",
        "--compile",
        "--no-kv-cache",
        "--max-new-tokens",
        "2",
    )
    assert_one_line_error(refused, "--compile")
