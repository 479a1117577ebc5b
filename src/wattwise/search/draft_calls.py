"""How the draft search (`search.drafts`) sizes, labels and times its calls: prompt and token
counts, time guesses, a candidate's role and libraries, and the paired timing of decoding."""

from __future__ import annotations

from wattwise.search.ordering import libraries_of
from wattwise.search.results import CandidateResult
from wattwise.search.space import Candidate
from wattwise.search.timing import PairedTiming, time_against_original

PROMPTS = 4
PROMPT_TOKENS = 16
NEW_TOKENS = 64
# Distillation steps per draft: at most this many, and none below the minimum (a draft made by
# dropping layers alone still decodes correctly, only with a lower acceptance rate).
MAX_DISTILL_STEPS = 300
MIN_DISTILL_STEPS = 10
# Saving a variant (weights, probe, hashes): seconds assumed before one has been measured.
FIRST_SAVE_GUESS_S = 1.0
# A paired timing slice (8% of the limit) should hold about ten calls (warm-ups and at least
# three pairs): one call of the target alone gets at most this share of the limit.
CALL_SHARE = 0.008
MIN_NEW_TOKENS = 8
# Seconds assumed for compiling the decode step before it has been measured (2-9 s measured
# for tiny-lm on 2 cores, docs/benchmarks.md).
COMPILE_GUESS_S = 15.0
COMPILED_LABEL = "the target, compiled decode steps (generate --compile)"
LOOKUP_LABEL = "lookup draft (the target's next tokens as n-gram tables + prompt lookup)"
# Seconds a lookup draft's tables may take to build: at most this, and at most this share of
# the limit (tiny-lm: 5 s for the teacher-forced pass over its train text, the rest for the
# target's own continuations, which only add contexts).
LOOKUP_BUILD_S = 30.0
LOOKUP_BUILD_SHARE = 0.08
NO_GAIN = "The target alone is the fastest; no draft pays off on this machine."


def new_tokens_that_fit(tokens_per_s: float, limit_s: float) -> int:
    """Tokens per timed call: NEW_TOKENS, fewer when one call of the target alone at
    `tokens_per_s` would take more than CALL_SHARE of the limit (never below MIN_NEW_TOKENS)."""
    return max(MIN_NEW_TOKENS, min(NEW_TOKENS, int(tokens_per_s * CALL_SHARE * limit_s)))


def role_of(result: CandidateResult) -> str:
    """ "draft", "target" (an int8 target), "compiled" (the target with compiled decode
    steps) or "original" (the target alone)."""
    return (result.generation or {}).get("role", "draft")


def libraries_needed(candidate: Candidate) -> list[str]:
    """The recipe's libraries beyond PyTorch, and transformers, whose `generate` decodes."""
    return sorted({*libraries_of(candidate.recipe), "transformers"})


def time_decoding(
    runner, alone, slice_s: float, abandon_below: float | None = None
) -> PairedTiming:
    """`runner` timed in alternation with the target alone, to ±3% or the slice's end."""
    return time_against_original(
        runner, alone, slice_s=slice_s, precision=0.03, min_pairs=3, abandon_below=abandon_below
    )
