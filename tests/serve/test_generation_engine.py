"""Continuous batching: iteration-level scheduling, exact greedy tokens, KV budget, cancel.

Requests ask for stop_at_eos=False where a test counts tokens: the tiny test model may say
end-of-text early, and what it says depends on its (seeded, but thread-count-dependent) training.
"""

from __future__ import annotations

import pytest
import torch

from tests.models.lm_helpers import tiny_lm  # noqa: F401
from wattwise.models.generation import greedy_generate
from wattwise.serve.generation_engine import ContinuousBatcher, KVCacheFullError


def _engine(model, **options) -> ContinuousBatcher:
    """An engine that knows the model's end-of-text token: with stop_at_eos=False it never
    chooses it, as `greedy_generate(stop_at_eos=False)` (transformers' min_new_tokens)."""
    return ContinuousBatcher(model, eos_token_id=model.lm.generation_config.eos_token_id, **options)


def _assert_each_gets_its_greedy_tokens(model, plan, streams, stop_at_eos: bool = False) -> None:
    """Every stream's tokens equal `greedy_generate` of its (prompt, new tokens) alone."""
    for (prompt, new), stream in zip(plan, streams, strict=True):
        alone, _ = greedy_generate(model, torch.tensor([prompt]), new, stop_at_eos=stop_at_eos)
        assert stream.tokens == alone[0].tolist()


def _submit_staggered(engine, plan, steps_between: int) -> list:
    """Submit each (prompt, new tokens) after `steps_between` steps of the ones before it (so
    requests join a running batch), then run until idle; the streams, in plan order."""
    streams = []
    for prompt, new in plan:
        streams.append(engine.submit(prompt, new, stop_at_eos=False))
        for _ in range(steps_between):
            engine.step()
    engine.run_until_idle()
    return streams


def _finish_order(engine, long_prompt, short_prompt):
    finished = []
    long = engine.submit(long_prompt, 40, stop_at_eos=False)
    for _ in range(3):  # the long request is running before the short one arrives
        engine.step()
    short = engine.submit(short_prompt, 4, stop_at_eos=False)
    while not engine.idle:
        engine.step()
        for name, stream in (("long", long), ("short", short)):
            if stream.finished and name not in finished:
                finished.append(name)
    return finished, long, short


def test_short_request_finishes_before_an_earlier_long_one(tiny_lm):  # noqa: F811
    prompts = [p[0].tolist() for p in tiny_lm.task.prompts(2, 8)]
    engine = ContinuousBatcher(tiny_lm.module, max_batch_size=4)
    order, long, short = _finish_order(engine, *prompts)
    assert order == ["short", "long"]
    assert len(short.tokens) == 4 and len(long.tokens) == 40
    # Static batching, same requests: the short one waits for the long one.
    static = ContinuousBatcher(tiny_lm.module, max_batch_size=4, policy="static")
    assert _finish_order(static, *prompts)[0] == ["long", "short"]


def test_batched_decoding_gives_each_request_its_own_greedy_tokens(tiny_lm):  # noqa: F811
    prompts = [
        p[0, :n].tolist() for p, n in zip(tiny_lm.task.prompts(3, 12), (5, 12, 8), strict=True)
    ]
    engine = _engine(tiny_lm.module, max_batch_size=3)
    streams = [engine.submit(prompt, 16, stop_at_eos=False) for prompt in prompts]
    engine.run_until_idle()
    _assert_each_gets_its_greedy_tokens(tiny_lm.module, [(p, 16) for p in prompts], streams)


def test_kv_budget_refuses_a_request_that_does_not_fit(tiny_lm):  # noqa: F811
    engine = ContinuousBatcher(tiny_lm.module, kv_cache_budget_bytes=1)
    engine.kv_cache_budget_bytes = engine.bytes_per_token * 30
    engine.submit([1, 2, 3, 4], 20)  # 24 tokens reserved
    with pytest.raises(KVCacheFullError, match="KV cache full"):
        engine.submit([1, 2, 3, 4], 20)
    engine.run_until_idle()
    engine.submit([1, 2, 3, 4], 20)  # the first one's reservation was released


def test_cancelled_request_leaves_the_batch(tiny_lm):  # noqa: F811
    engine = ContinuousBatcher(tiny_lm.module)
    stream = engine.submit([1, 2, 3], 50, stop_at_eos=False)
    engine.step()
    stream.cancel()
    engine.run_until_idle()
    assert stream.finished and stream.finish_reason == "cancelled"
    assert len(stream.tokens) < 50 and engine.reserved_bytes == 0


def test_requests_joining_and_leaving_a_running_batch_keep_their_greedy_tokens(tiny_lm):  # noqa: F811
    # The batch shares one left-padded cache: a later request with a longer prompt than the
    # batch's columns pads the batch, one with a shorter prompt is padded in, and a request
    # leaving drops its row and the columns nobody needs; every request's tokens stay its own.
    prompts = [p[0].tolist() for p in tiny_lm.task.prompts(4, 12)]
    plan = [(prompts[0][:3], 6), (prompts[1][:12], 20), (prompts[2][:2], 9), (prompts[3][:7], 5)]
    engine = _engine(tiny_lm.module, max_batch_size=3)
    assert engine.kv.sdpa_mask  # tiny-lm attends with SDPA: the ready-made 4D mask is used
    streams = _submit_staggered(engine, plan, steps_between=2)
    assert engine.kv.rows == 0
    _assert_each_gets_its_greedy_tokens(tiny_lm.module, plan, streams)


def test_tokens_stay_exact_when_the_cache_outgrows_its_preallocated_columns(tiny_lm):  # noqa: F811
    # Decode steps write into spare columns; past HEADROOM_COLUMNS the buffers grow (a copy).
    from wattwise.serve.ragged_kv_cache import HEADROOM_COLUMNS

    prompts = [p[0].tolist() for p in tiny_lm.task.prompts(2, 10)]
    plan = [(prompts[0][:10], HEADROOM_COLUMNS + 30), (prompts[1][:4], HEADROOM_COLUMNS + 10)]
    engine = _engine(tiny_lm.module, max_batch_size=2)
    streams = [engine.submit(prompt, new, stop_at_eos=False) for prompt, new in plan]
    engine.run_until_idle()
    _assert_each_gets_its_greedy_tokens(tiny_lm.module, plan, streams)


def test_eager_attention_models_get_the_two_dimensional_padding_mask(tiny_lm):  # noqa: F811
    # SDPA models take a ready-made boolean 4D mask; others (eager attention adds the mask to
    # the scores) must keep the 2D one. Padded rows must still give each request its tokens.
    import copy

    model = copy.deepcopy(tiny_lm.module)
    model.lm.set_attn_implementation("eager")
    prompts = [p[0, :n].tolist() for p, n in zip(tiny_lm.task.prompts(2, 9), (3, 9), strict=True)]
    engine = _engine(model, max_batch_size=2)
    assert not engine.kv.sdpa_mask
    streams = [engine.submit(prompt, 6, stop_at_eos=False) for prompt in prompts]
    engine.run_until_idle()
    _assert_each_gets_its_greedy_tokens(model, [(p, 6) for p in prompts], streams)


@pytest.mark.parametrize("stop_at_eos", [False, True])
def test_a_request_running_alone_speculates_with_a_lookup_draft_and_keeps_its_tokens(
    tiny_lm,  # noqa: F811
    stop_at_eos,
):
    # Alone, the request's steps draft and verify several tokens; when others join, the batch
    # decodes one token per row; when they leave, it speculates again. Tokens stay exact, also
    # past the preallocated columns (rejected columns are forgotten, not copied).
    from wattwise.compress.lookup_draft import build_lookup_draft
    from wattwise.serve.ragged_kv_cache import HEADROOM_COLUMNS

    draft = build_lookup_draft(tiny_lm, seconds=3.0)
    prompts = [p[0].tolist() for p in tiny_lm.task.prompts(3, 10, "test")]
    plan = [(prompts[0], HEADROOM_COLUMNS + 40), (prompts[1][:4], 6), (prompts[2][:7], 9)]
    engine = _engine(tiny_lm.module, max_batch_size=3, draft=draft)
    first = engine.submit(*plan[0], stop_at_eos=stop_at_eos)
    for _ in range(4):
        engine.step()
    streams = [first] + [engine.submit(p, n, stop_at_eos=stop_at_eos) for p, n in plan[1:]]
    engine.run_until_idle()
    _assert_each_gets_its_greedy_tokens(tiny_lm.module, plan, streams, stop_at_eos)
    if not stop_at_eos:
        assert engine.speculative_rounds > 0 and engine.drafted_tokens > 0
        assert 0 <= engine.accepted_tokens <= engine.drafted_tokens


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("policy", ["continuous", "static"])
def test_batched_rows_each_keep_their_own_drafted_tokens(tiny_lm, attention, policy, monkeypatch):  # noqa: F811
    # Every running row drafts and verifies at once; rows keep different numbers of tokens,
    # which leaves holes in the shared cache (masked, then packed away). Requests join and
    # leave meanwhile; each request's tokens stay its own greedy tokens.
    import copy

    from wattwise.compress.lookup_draft import build_lookup_draft
    from wattwise.serve import ragged_kv_cache

    # Pack holes away as soon as there are a few: the packing runs many times here.
    monkeypatch.setattr(ragged_kv_cache, "COMPACT_WIDTH_RATIO", 1.0)
    monkeypatch.setattr(ragged_kv_cache, "COMPACT_SLACK_COLUMNS", 0)
    model = tiny_lm.module
    if attention == "eager":
        model = copy.deepcopy(tiny_lm.module)
        model.lm.set_attn_implementation("eager")
    draft = build_lookup_draft(tiny_lm, seconds=3.0)
    prompts = [p[0].tolist() for p in tiny_lm.task.prompts(4, 12, "test")]
    plan = [(prompts[0][:3], 90), (prompts[1][:12], 30), (prompts[2][:5], 70), (prompts[3][:8], 9)]
    engine = _engine(model, max_batch_size=3, draft=draft, policy=policy)
    streams = _submit_staggered(engine, plan, steps_between=3)
    _assert_each_gets_its_greedy_tokens(model, plan, streams)
    assert engine.kv.rows == 0 and engine.drafted_tokens > 0


def test_rows_that_keep_fewer_drafted_columns_get_holes_then_are_packed_right_aligned():
    # Two rows (lengths 2 and 3), a step writes 3 columns and they keep 1 and 3 of them: the
    # first row has two holes, masked; packing moves each row's kept columns right-aligned.
    from wattwise.serve.ragged_kv_cache import RaggedKVCache

    def layer(values):  # (1 row, 1 head, columns, width 1), each column holding its value
        return torch.tensor(values, dtype=torch.float32).reshape(1, 1, -1, 1)

    kv = RaggedKVCache(sdpa_mask=True)
    kv.add([(layer([1, 2]), layer([1, 2]))])
    kv.add([(layer([5, 6, 7]), layer([5, 6, 7]))])
    inputs = kv.decode_inputs(3)
    assert inputs["position_ids"].tolist() == [[2, 3, 4], [3, 4, 5]]
    cache = inputs["past_key_values"]
    cache.layers[0].update(
        layer([3, 90, 91] * 1).repeat(2, 1, 1, 1), layer([0, 0, 0]).repeat(2, 1, 1, 1)
    )
    kv.advance(cache, [1, 3])
    assert kv.lengths == [3, 6] and kv.columns == 6
    assert kv.valid.tolist() == [[False, True, True, True, False, False], [True] * 6]
    mask = kv.decode_inputs(1)["attention_mask"]
    assert mask.shape == (2, 1, 1, 7) and mask[0, 0, 0].tolist() == [0, 1, 1, 1, 0, 0, 1]
    kv._compact()
    assert kv.valid is None and kv.compactions == 1
    keys = kv.layers[0][0][:, 0, :, 0]
    assert keys[0, -3:].tolist() == [1, 2, 3] and keys[1].tolist() == [5, 6, 7, 3, 90, 91]


def test_a_llama_directory_keeps_its_greedy_tokens_in_a_ragged_batch(tmp_path):
    # Rotary positions and grouped key/value heads: a left-padded row must still see each of
    # its tokens at its own position, as when it decodes alone.
    from tests.models.lm_helpers import write_user_causal_lm
    from wattwise.models.registry import load_model

    model = load_model(str(write_user_causal_lm(tmp_path / "llama", architecture="llama"))).module
    plan = [([5, 9, 13], 7), ([20, 3, 3, 8, 41, 2, 17, 30], 12), ([11], 9), ([6, 6, 40, 2], 5)]
    engine = _engine(model, max_batch_size=3)
    streams = _submit_staggered(engine, plan, steps_between=2)
    _assert_each_gets_its_greedy_tokens(model, plan, streams)
