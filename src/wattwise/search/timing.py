"""Time a candidate against the original in alternation, within a time slice.

Hosts drift: the same fp32 model ran 2-3x apart on two days, and a minute apart on a shared
machine (../shared/FIELD-NOTES.md). A speed-up computed from two profiles taken minutes apart
carries that drift; one computed from alternating calls (original, candidate, candidate,
original, ...) cancels it. So every candidate, and the final held-out check, is timed the same
way: paired with the original, in the same process, each pair giving one ratio, until the
ratio is known to `precision` or the slice is spent. A candidate whose first pairs are already
far slower than the best so far is abandoned there, so a slow one cannot eat the time limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

# Each timed sample holds enough calls to last about this long, so that a 0.1 ms model is not
# timed at the resolution of the clock and the loop's own overhead.
SAMPLE_TARGET_S = 0.005

# Idle time, not timed, before the second side of each pair. A thread pool keeps spinning for a
# while after a call returns (ONNX Runtime's intra-op workers by default): measured here, a
# micro-batched ONNX Runtime call right after a 2-thread ONNX Runtime call took 1.2-1.3x its
# time after itself, with 20 ms of pause 1.1x, with 100 ms 1.0x. Alone in a server, a
# model's spinning only competes with itself, so neither side is timed inside the other's spin.
SWITCH_PAUSE_S = 0.1


@dataclass
class PairedTiming:
    """A candidate timed in alternation with the original at one batch size.

    Attributes:
        status: "measured", "abandoned" (slower than `abandon_below` after its first pairs) or
            "timeout" (its first call did not finish within the slice).
        ratio: the original's time per call ÷ the candidate's (2.0: twice as fast); geometric
            mean over the pairs.
        ratio_low / ratio_high: the 95% confidence interval of `ratio` (t on log ratios).
        candidate_ms / original_ms: median milliseconds per call of each, in this run.
        pairs: timed pairs; calls_per_sample: calls in each timed sample.
        seconds: wall time spent, warm-up included.
        reason: why it stopped ("precision 3% reached", "slice of 8 s spent", ...).
    """

    status: str
    ratio: float
    ratio_low: float
    ratio_high: float
    candidate_ms: float
    original_ms: float
    pairs: int
    calls_per_sample: int
    seconds: float
    reason: str

    @property
    def spread_pct(self) -> float:
        """Half the interval's width, as a percentage of the ratio."""
        if not self.ratio:
            return float("nan")
        return (self.ratio_high - self.ratio_low) / 2 / self.ratio * 100

    def agrees_with(self, other: PairedTiming) -> bool:
        """Whether two measurements of the same ratio agree: their intervals overlap."""
        return self.ratio_low <= other.ratio_high and other.ratio_low <= self.ratio_high

    def describe(self) -> str:
        """e.g. '3.41x (3.30–3.52, 12 pairs)'."""
        return f"{self.ratio:.2f}x ({self.ratio_low:.2f}–{self.ratio_high:.2f}, {self.pairs} pairs)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def _interval(log_ratios: list[float]) -> tuple[float, float, float]:
    values = np.asarray(log_ratios)
    mean = float(values.mean())
    if len(values) < 2:
        return math.exp(mean), 0.0, math.inf
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def _first_call_within(run: Callable[[], object], timeout_s: float) -> float | None:
    """Seconds one call took, or None when it had not finished after `timeout_s`.

    The call runs in a daemon thread so a candidate that hangs (or is hundreds of times
    slower) cannot hold the search; Python cannot stop that thread, so it finishes on its own.
    """
    finished: list[float] = []
    failure: list[BaseException] = []

    def call() -> None:
        started = time.perf_counter()
        try:
            run()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(error)
            return
        finished.append(time.perf_counter() - started)

    worker = threading.Thread(target=call, name="wattwise-first-call", daemon=True)
    worker.start()
    worker.join(max(timeout_s, 0.0))
    if failure:
        raise failure[0]
    return finished[0] if finished else None


def _timed(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls


def time_against_original(
    candidate: Callable[[], object],
    original: Callable[[], object],
    *,
    slice_s: float,
    precision: float = 0.03,
    min_pairs: int = 3,
    max_pairs: int = 400,
    abandon_below: float | None = None,
    abandon_after_pairs: int = 2,
    original_warm_s: float | None = None,
) -> PairedTiming:
    """Time `candidate` against `original` in alternating pairs until the ratio's 95% interval
    is within ±`precision`, or `slice_s` is spent.

    `original_warm_s`: seconds per call of an original that has already run on inputs of this
    shape in this process (the search's baseline): it then gets no warm-up calls.
    `abandon_below`: after `abandon_after_pairs` pairs, stop with status "abandoned" when every
    ratio so far is below it (the candidate cannot come near the best so far).
    Example:
        timing = time_against_original(lambda: q(x), lambda: m(x), slice_s=8.0)
    """
    started = time.perf_counter()
    deadline = started + slice_s
    first = _first_call_within(candidate, slice_s)
    if first is None:
        return PairedTiming(
            "timeout", 0.0, 0.0, 0.0, slice_s * 1000, 0.0, 0, 1, time.perf_counter() - started,
            f"its first call did not finish within its {slice_s:.3g} s slice",
        )  # fmt: skip
    # One more warm-up call each: compiled and ONNX Runtime paths settle after the first.
    candidate_s = min(first, _timed(candidate, 1))
    if original_warm_s is None:
        original_s = min(_timed(original, 1), _timed(original, 1))
    else:
        original_s = original_warm_s
    # Each side gets its own call count, so a fast original is not called in the hundreds to
    # match a slow candidate's sample length (and the reverse).
    candidate_calls = max(1, math.ceil(SAMPLE_TARGET_S / max(candidate_s, 1e-6)))
    original_calls = max(1, math.ceil(SAMPLE_TARGET_S / max(original_s, 1e-6)))
    calls = max(candidate_calls, original_calls)
    log_ratios: list[float] = []
    candidate_times: list[float] = []
    original_times: list[float] = []
    reason = f"the {slice_s:.0f} s slice was spent"
    status = "measured"
    while len(log_ratios) < max_pairs:
        pair_cost = candidate_calls * candidate_s + original_calls * original_s + SWITCH_PAUSE_S
        if time.perf_counter() + pair_cost > deadline and len(log_ratios) >= 1:
            break
        # Alternate which goes first, so neither always runs on a warmer cache (the side that
        # ran last goes first in the next pair, so each pair has one switch of side).
        if len(log_ratios) % 2 == 0:
            original_s = _timed(original, original_calls)
            time.sleep(SWITCH_PAUSE_S)
            candidate_s = _timed(candidate, candidate_calls)
        else:
            candidate_s = _timed(candidate, candidate_calls)
            time.sleep(SWITCH_PAUSE_S)
            original_s = _timed(original, original_calls)
        candidate_times.append(candidate_s)
        original_times.append(original_s)
        log_ratios.append(math.log(original_s / candidate_s))
        pairs = len(log_ratios)
        if abandon_below is not None and pairs >= abandon_after_pairs:
            best_seen = math.exp(max(log_ratios))
            if best_seen < abandon_below:
                status = "abandoned"
                reason = (
                    f"{math.exp(float(np.mean(log_ratios))):.2f}x after {pairs} "
                    f"batches (below {abandon_below:.2f}x, half the best so far)"
                )
                break
        if pairs >= min_pairs:
            ratio, low, high = _interval(log_ratios)
            if max(high / ratio - 1, 1 - low / ratio) <= precision:
                reason = f"ratio known to ±{precision:.0%} (95% interval)"
                break
    # The slice may end before a second pair: a first pair far below the bar is enough.
    below = abandon_below is not None and log_ratios and math.exp(max(log_ratios)) < abandon_below
    if status == "measured" and below:
        status = "abandoned"
        reason = (
            f"{math.exp(float(np.mean(log_ratios))):.2f}x after {len(log_ratios)} "
            f"batches (below {abandon_below:.2f}x, half the best so far)"
        )
    ratio, low, high = _interval(log_ratios)
    return PairedTiming(
        status=status,
        ratio=ratio,
        ratio_low=low,
        ratio_high=high if math.isfinite(high) else ratio * 10,
        candidate_ms=float(np.median(candidate_times)) * 1000,
        original_ms=float(np.median(original_times)) * 1000,
        pairs=len(log_ratios),
        calls_per_sample=calls,
        seconds=time.perf_counter() - started,
        reason=reason,
    )
