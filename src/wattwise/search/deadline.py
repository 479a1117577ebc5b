"""The time limit as a contract: what each part of a search may spend, decided from the clock.

The whole run — model load, probe, baseline, candidates, held-out confirmation, report — must
end within the limit plus 10%. Candidates only start when their expected cost fits in what is
left after the reserve that confirmation and the report need; each candidate's timing gets a
slice of the limit; training steps are cut to what fits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# A candidate's paired timing gets at most this share of the limit (issue #13: ≤ 8%).
SLICE_SHARE = 0.08
# The run may overrun its limit by this share (the contract is limit + 10%); we plan for less.
GRACE_SHARE = 0.10
# Seconds the report takes to write (three plots, three files), measured ~1-3 s on 2 cores.
REPORT_S = 4.0
# Forward + backward ≈ 3 forward passes: the cost of one training step, in batch times.
TRAIN_STEP_FORWARDS = 3.0


@dataclass
class Deadline:
    """The clock of one optimize run.

    Attributes:
        limit_s: the user's --time-limit.
        started: perf_counter() when the run started (before the model was loaded).
        reserve_s: seconds kept back for confirmation and the report (set after the baseline).
    """

    limit_s: float
    started: float = field(default_factory=time.perf_counter)
    reserve_s: float = REPORT_S

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    def left(self) -> float:
        """Seconds left before the limit."""
        return self.limit_s - self.elapsed()

    def left_for_candidates(self) -> float:
        """Seconds left for candidates once the reserve is kept back."""
        return self.left() - self.reserve_s

    def left_with_grace(self) -> float:
        """Seconds left before limit + grace: the hard end for confirmation and the report."""
        return self.limit_s * (1 + GRACE_SHARE) - self.elapsed()

    def slice_s(self) -> float:
        """The timing slice of one candidate: a share of the limit, never more than is left."""
        return max(0.5, min(SLICE_SHARE * self.limit_s, self.left_for_candidates()))


def training_steps_that_fit(
    requested: int, seconds: float, batch_s: float, minimum: int = 30
) -> int | None:
    """How many of `requested` training steps fit in `seconds` at `batch_s` per forward batch;
    None when fewer than `minimum` (or all requested, if fewer) fit."""
    if batch_s <= 0:
        return requested
    fit = int(seconds / (TRAIN_STEP_FORWARDS * batch_s))
    if fit >= requested:
        return requested
    return fit if fit >= min(minimum, requested) else None
