"""What one greedy generation took: `DecodeStats` and the gaps between its tokens (shared by
transformers' `generate` path, `models.generation`, and the lookup-draft loop,
`models.speculative`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field


@dataclass
class DecodeStats:
    """One greedy generation.

    Attributes:
        new_tokens: tokens generated (prompt excluded).
        seconds: wall-clock seconds of the whole `generate` call.
        ttft_ms: milliseconds from the call to the first new token.
        token_times_ms: milliseconds between consecutive new tokens (speculative rounds emit
            several at once: their gaps are 0).
        target_forwards: forward passes of the target model.
        draft_forwards: drafted tokens: forward passes of a draft network (one token each),
            or tokens a lookup draft proposed (0 without a draft).
        compile_s: seconds of the untimed warm-up call that compiled the decode step
            (`compiled=True`; milliseconds once the graph for this cache length exists; 0
            without `compiled`). Not part of `seconds`.
    """

    new_tokens: int
    seconds: float
    ttft_ms: float
    token_times_ms: list[float] = field(default_factory=list)
    target_forwards: int = 0
    draft_forwards: int = 0
    compile_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """New tokens per wall-clock second."""
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted draft tokens / drafted tokens. Every verification round (one target
        forward after the prefill) yields its accepted draft tokens plus one token of the
        target's own, so accepted = new tokens − rounds; each draft forward drafts one token."""
        if not self.draft_forwards:
            return None
        rounds = max(self.target_forwards, 1)
        return max(self.new_tokens - rounds, 0) / self.draft_forwards


def token_gaps(arrivals: list[tuple[float, int]]) -> list[float]:
    """Milliseconds between consecutive new tokens, from (time, tokens arrived) pairs: the
    first token of an arrival is the gap since the last, the rest of it arrived at once (0)."""
    gaps: list[float] = []
    for (previous, _), (now, count) in itertools.pairwise(arrivals):
        gaps.extend([(now - previous) * 1000] + [0.0] * (count - 1))
    return gaps
