"""When a served lookup draft pays: measured per batch size, not assumed.

A drafted step verifies rows × (drafted + 1) tokens in one forward. On a small model that costs
little more than a plain step (tiny-lm, 8 rows: 4.7 ms for 7 tokens per row against 2.6 ms for
one) and the draft wins; on a model whose forward is compute-bound, or at a large batch, the
extra tokens can cost more than the accepted ones save. The controller keeps, for each batch
size bucket (1, 2-3, 4-7, 8-15, ...), a moving average of the tokens per second that drafted
and plain steps delivered, uses the faster, and every PROBE_EVERY steps tries the other so a
change (another load, other text) is noticed. Nothing like it exists in transformers or Ray
Serve; vLLM turns speculation off above a fixed batch size instead of measuring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# One step in this many tries the mode that is not preferred.
PROBE_EVERY = 32
# Steps of each mode measured (alternating) before either is preferred: a single first step
# can be an outlier (first calls at a new shape allocate).
FIRST_SAMPLES = 3
# Weight of the newest step in the moving average of tokens per second (a plain mean until
# 1 / SMOOTHING steps were measured).
SMOOTHING = 0.2


@dataclass
class DraftController:
    """Chooses drafted or plain decode steps by their measured tokens per second.

    Attributes:
        rates: bucket → [drafted tokens/s, plain tokens/s] (None until measured).
        samples: bucket → [drafted steps, plain steps] measured.
        steps: steps chosen so far.
    """

    rates: dict[int, list[float | None]] = field(default_factory=dict)
    samples: dict[int, list[int]] = field(default_factory=dict)
    steps: int = 0

    def choose(self, rows: int) -> bool:
        """Whether the next step of `rows` running requests should draft."""
        bucket = _bucket(rows)
        drafted, plain = self.rates.setdefault(bucket, [None, None])
        counted = self.samples.setdefault(bucket, [0, 0])
        self.steps += 1
        if min(counted) < FIRST_SAMPLES:
            return counted[0] <= counted[1]  # measure both, alternating, drafted first
        preferred = drafted >= plain
        return not preferred if self.steps % PROBE_EVERY == 0 else preferred

    def record(self, rows: int, drafted: bool, tokens: int, seconds: float) -> None:
        """A step of `rows` requests (drafted or not) produced `tokens` in `seconds`."""
        if seconds <= 0:
            return
        bucket = _bucket(rows)
        entry = self.rates.setdefault(bucket, [None, None])
        counted = self.samples.setdefault(bucket, [0, 0])
        slot = 0 if drafted else 1
        counted[slot] += 1
        weight = max(SMOOTHING, 1 / counted[slot])
        rate = tokens / seconds
        entry[slot] = rate if entry[slot] is None else (1 - weight) * entry[slot] + weight * rate

    def summary(self) -> dict[str, dict[str, float | None]]:
        """Measured tokens/s per batch-size bucket, for reports and tests."""
        return {
            f"{1 << (bucket - 1)}-{(1 << bucket) - 1} rows": {"drafted": d, "plain": p}
            for bucket, (d, p) in sorted(self.rates.items())
        }


def _bucket(rows: int) -> int:
    return max(1, rows).bit_length()
