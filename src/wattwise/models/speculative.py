"""Greedy speculative decoding with a lookup draft (`models.lookup_draft`): the draft proposes
tokens, one forward of the target over them verifies all at once, the agreeing prefix plus the
target's own next token is kept, and the KV cache is cut back to what was kept.

Why our own loop instead of transformers' assisted generation: `generate` takes only a draft
network or its own prompt lookup as the candidate source, and at a small model's size its
per-round bookkeeping costs about as much as the target's forward. Measured on tiny-lm (2-core
EPYC, 256 new tokens, docs/benchmarks.md): prompt lookup through `generate` ran 1.15-1.22x the
target alone, the same drafts through this loop 2.0-2.2x, with identical tokens. The loop keeps
`generate`'s greedy semantics: the end-of-text token stops decoding, or is never chosen with
`stop_at_eos=False` (as `min_new_tokens` does), and a model whose generation config changes
greedy choices (repetition penalty, banned words, ...) is refused rather than decoded
differently.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from wattwise.errors import ConfigError
from wattwise.models.decode_stats import DecodeStats, token_gaps
from wattwise.models.lookup_draft import LookupDraft

# Generation-config fields that make `generate` pick other tokens than the plain argmax, with
# the values that leave it plain.
NEUTRAL_SETTINGS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,),
}


def require_plain_greedy(lm: nn.Module) -> None:
    """A ConfigError when `lm`'s generation config alters greedy choices (the lookup loop
    implements plain argmax decoding only)."""
    config = lm.generation_config
    for name, neutral in NEUTRAL_SETTINGS.items():
        value = getattr(config, name, None)
        if value not in neutral:
            raise ConfigError(
                f"the model's generation config sets {name}={value!r}, which the lookup draft's "
                "verification does not apply; use a model draft (--draft auto) or none"
            )


def _end_tokens(lm: nn.Module) -> set[int]:
    eos = lm.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(token) for token in eos}


def lookup_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    draft: LookupDraft,
    stop_at_eos: bool = True,
) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy tokens after `input_ids` (batch 1) drafted by `draft` and verified by `model`
    (a `CausalLM`); the same tokens `greedy_generate(model, ...)` returns, with its stats
    (`draft_forwards` counts drafted tokens, so `acceptance_rate` is accepted / drafted)."""
    from transformers import DynamicCache

    lm = model.lm
    require_plain_greedy(lm)
    if input_ids.shape[0] != 1:
        raise ConfigError("speculative decoding runs at batch 1; pass one prompt")
    if draft.vocabulary and draft.vocabulary != lm.config.get_text_config().vocab_size:
        raise ConfigError(
            f"the lookup draft was built for a {draft.vocabulary}-token vocabulary, the model "
            f"has {lm.config.get_text_config().vocab_size}; build one from this model"
        )
    # An end token outside the vocabulary can never be chosen (generate ignores it too).
    ends = {token for token in _end_tokens(lm) if token < lm.config.get_text_config().vocab_size}
    suppressed = sorted(ends) if not stop_at_eos else []
    tokens = input_ids[0].tolist()
    prompt_length = len(tokens)
    arrivals: list[tuple[float, int]] = []
    forwards, drafted, finished = 0, 0, False
    cache = DynamicCache(config=lm.config)
    with torch.inference_mode():
        started = time.perf_counter()
        step_input = input_ids.to(lm.device)
        proposal: list[int] = []
        while not finished:
            logits = lm(step_input, past_key_values=cache, use_cache=True).logits[0]
            forwards += 1
            if suppressed:
                logits[:, suppressed] = float("-inf")
            kept = verified_tokens(proposal, logits[-len(proposal) - 1 :].argmax(-1).tolist())
            if stop_at_eos:
                ended = [i for i, token in enumerate(kept) if token in ends]
                if ended:
                    kept, finished = kept[: ended[0] + 1], True
            tokens.extend(kept)
            arrivals.append((time.perf_counter(), len(kept)))
            left = max_new_tokens - (len(tokens) - prompt_length)
            finished = finished or left <= 0
            if not finished:
                _keep_cached(cache, len(tokens) - 1)
                proposal = draft.propose(tokens, min(draft.draft_tokens, left - 1))
                drafted += len(proposal)
                step_input = torch.tensor([[tokens[-1], *proposal]], device=lm.device)
        seconds = time.perf_counter() - started
    new = tokens[prompt_length:]
    ttft_ms = (arrivals[0][0] - started) * 1000
    stats = DecodeStats(len(new), seconds, ttft_ms, token_gaps(arrivals), forwards, drafted)
    return torch.tensor([new], dtype=input_ids.dtype), stats


def verified_tokens(proposal: list[int], predicted: list[int]) -> list[int]:
    """What a verification forward keeps: the drafted tokens up to the first one the model
    did not choose itself, then the model's own token there (`predicted[i]`: its choice after
    the prefix and `proposal[:i]`)."""
    agreed = 0
    while agreed < len(proposal) and proposal[agreed] == predicted[agreed]:
        agreed += 1
    return [*proposal[:agreed], predicted[agreed]]


def _keep_cached(cache, length: int) -> None:
    """Cut the KV cache back to its first `length` positions (rejected drafts' keys and
    values go)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        try:
            cache.crop(-extra)
        except Exception as error:  # a cache kind that cannot be cut back
            raise ConfigError(
                f"this model's KV cache cannot be cut back ({type(error).__name__}: {error}); "
                "a lookup draft needs a cache that drops rejected tokens; use --draft auto"
            ) from error
