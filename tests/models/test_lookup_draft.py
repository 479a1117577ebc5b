"""Lookup drafts (n-gram tables of the target's next tokens + prompt lookup): greedy output is
the target's own whatever the draft proposes; drafts save, load and refuse what they cannot do."""

from __future__ import annotations

import pytest
import torch

from tests.models.lm_helpers import tiny_lm, write_user_causal_lm  # noqa: F401
from wattwise.compress.lookup_draft import build_lookup_draft
from wattwise.errors import ConfigError
from wattwise.models.generation import greedy_generate
from wattwise.models.lookup_draft import LookupDraft, load_lookup_draft, prompt_lookup


@pytest.fixture(scope="module")
def lookup(tiny_lm):  # noqa: F811
    return build_lookup_draft(tiny_lm, seconds=5.0)


def test_prompt_lookup_copies_what_followed_the_latest_earlier_match():
    assert prompt_lookup([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 2) == [7, 5]
    assert prompt_lookup([4, 5, 6, 4, 5], 3) == [6, 4, 5]  # a 2-gram match when no 3-gram one
    assert prompt_lookup([1, 2, 3, 4], 3) == []


def test_prompt_lookup_agrees_with_a_plain_scan_on_random_texts():
    import random

    def plain(tokens, count):
        for n in (3, 2):
            for start in range(len(tokens) - n - 1, -1, -1):
                if len(tokens) > n and tokens[start : start + n] == tokens[-n:]:
                    return tokens[start + n : start + n + count]
        return []

    generator = random.Random(0)
    for _ in range(500):
        tokens = [generator.randrange(4) for _ in range(generator.randrange(1, 30))]
        assert prompt_lookup(tokens, 3) == plain(tokens, 3), tokens


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_greedy_with_a_lookup_draft_is_identical_to_the_target(tiny_lm, lookup, stop_at_eos):  # noqa: F811
    assert lookup.provenance["teacher_forced_tokens"] > 0 and lookup.order == 3
    drafted = 0
    for prompt in tiny_lm.task.prompts(4, 8, "test"):
        alone, _ = greedy_generate(tiny_lm.module, prompt, 40, stop_at_eos=stop_at_eos)
        got, stats = greedy_generate(
            tiny_lm.module, prompt, 40, draft=lookup, stop_at_eos=stop_at_eos
        )
        assert torch.equal(alone, got)
        assert stats.new_tokens == got.shape[1]
        drafted += stats.draft_forwards
        if stats.draft_forwards:
            assert 0 <= stats.acceptance_rate <= 1
    assert drafted > 0


def test_a_draft_that_is_always_wrong_still_gives_the_targets_tokens(tiny_lm):  # noqa: F811
    prompt = tiny_lm.task.prompts(1, 8, "test")[0]
    alone, _ = greedy_generate(tiny_lm.module, prompt, 30, stop_at_eos=False)
    wrong = {}
    for context in {tuple(alone[0, i : i + 1].tolist()) for i in range(30)}:
        wrong[context] = (context[0] + 1) % 50  # never the token the target chose there
    draft = LookupDraft([wrong], draft_tokens=4)
    got, stats = greedy_generate(tiny_lm.module, prompt, 30, draft=draft, stop_at_eos=False)
    assert torch.equal(alone, got)
    assert stats.draft_forwards > 0


def test_a_saved_draft_loads_back_equal_and_bad_directories_are_refused(lookup, tmp_path):
    lookup.save(tmp_path / "draft")
    loaded = load_lookup_draft(tmp_path / "draft")
    assert loaded.tables == lookup.tables and loaded.vocabulary == lookup.vocabulary
    with pytest.raises(ConfigError, match="not a lookup draft"):
        load_lookup_draft(tmp_path)


def test_a_draft_for_another_vocabulary_or_a_penalised_model_is_refused(tiny_lm, lookup):  # noqa: F811
    prompt = tiny_lm.task.prompts(1, 8, "test")[0]
    foreign = LookupDraft(lookup.tables, vocabulary=lookup.vocabulary + 1)
    with pytest.raises(ConfigError, match="vocabulary"):
        greedy_generate(tiny_lm.module, prompt, 4, draft=foreign)
    config = tiny_lm.module.lm.generation_config
    config.repetition_penalty = 1.3
    try:
        with pytest.raises(ConfigError, match="repetition_penalty"):
            greedy_generate(tiny_lm.module, prompt, 4, draft=lookup)
    finally:
        config.repetition_penalty = 1.0
    with pytest.raises(ConfigError, match="drop --compile"):
        greedy_generate(tiny_lm.module, prompt, 4, draft=lookup, compiled=True)


def test_a_users_causal_lm_directory_gets_a_lookup_draft(tmp_path):
    from wattwise.models.registry import load_model

    user = load_model(str(write_user_causal_lm(tmp_path / "user-lm")))
    draft = build_lookup_draft(user, seconds=3.0)
    for prompt in user.task.prompts(2, 6, "test"):
        alone, _ = greedy_generate(user.module, prompt, 20, stop_at_eos=False)
        got, _ = greedy_generate(user.module, prompt, 20, draft=draft, stop_at_eos=False)
        assert torch.equal(alone, got)


def test_generate_cli_with_a_lookup_draft(tiny_lm, tmp_path):  # noqa: F811 - trains tiny-lm once
    from tests.cli.run_cli import run_json

    result = run_json(
        "generate", "tiny-lm", "--prompt", "Return the", "--max-new-tokens", "12",
        "--draft", "lookup", "--ignore-eos", in_process=True,
    )  # fmt: skip
    assert result["identical_to_target"] is True and result["new_tokens"] == 12
    assert "lookup draft" in result["draft"] and result["speedup"] > 0
    build_lookup_draft(tiny_lm, seconds=2.0).save(tmp_path / "saved")
    again = run_json(
        "generate", "tiny-lm", "--prompt", "Return the", "--max-new-tokens", "12",
        "--draft", str(tmp_path / "saved"), "--ignore-eos", in_process=True,
    )  # fmt: skip
    assert again["token_ids"] == result["token_ids"] and str(tmp_path) in again["draft"]


def test_lookup_drafts_are_cached_per_model_weights(tiny_lm, tmp_path, monkeypatch):  # noqa: F811
    import copy

    from wattwise.compress import lookup_draft as builder

    monkeypatch.setenv("WATTWISE_CACHE", str(tmp_path))
    built = []
    real_build = builder.build_lookup_draft
    monkeypatch.setattr(
        builder, "build_lookup_draft",
        lambda target, **kw: built.append(target) or real_build(target, seconds=2.0),
    )  # fmt: skip
    first = builder.cached_lookup_draft(tiny_lm)
    again = builder.cached_lookup_draft(tiny_lm)
    assert len(built) == 1 and again.tables == first.tables
    changed = copy.copy(tiny_lm)
    changed.module = copy.deepcopy(tiny_lm.module)
    with torch.no_grad():
        next(changed.module.parameters()).add_(1.0)
    builder.cached_lookup_draft(changed)
    assert len(built) == 2  # other weights: another draft
