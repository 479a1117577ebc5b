"""The served draft's controller: drafted or plain steps, by measured tokens per second."""

from __future__ import annotations

from wattwise.serve.draft_control import FIRST_SAMPLES, PROBE_EVERY, DraftController


def _run(
    controller: DraftController, rows: int, drafted_rate: float, plain_rate: float, steps: int
) -> int:
    """Steps that drafted, when drafted steps deliver `drafted_rate` tokens/s and plain ones
    `plain_rate` (each step takes 1 ms)."""
    drafted = 0
    for _ in range(steps):
        drafting = controller.choose(rows)
        drafted += drafting
        rate = drafted_rate if drafting else plain_rate
        controller.record(rows, drafting, int(rate / 1000), 0.001)
    return drafted


def test_both_modes_are_measured_first_then_the_faster_is_used_with_probes():
    controller = DraftController()
    # Drafted and plain steps alternate until each was measured FIRST_SAMPLES times.
    assert _run(controller, 8, 5000, 3000, 2 * FIRST_SAMPLES) == FIRST_SAMPLES
    drafted = _run(controller, 8, 5000, 3000, 10 * PROBE_EVERY)
    assert 10 * PROBE_EVERY - 10 <= drafted < 10 * PROBE_EVERY  # all but the probes
    slower = DraftController()
    steps = 2 * FIRST_SAMPLES + 10 * PROBE_EVERY
    assert _run(slower, 32, 2000, 6000, steps) <= FIRST_SAMPLES + 10  # first ones and probes


def test_a_change_in_what_pays_is_noticed_through_the_probes():
    controller = DraftController()
    _run(controller, 4, 5000, 3000, 4 * PROBE_EVERY)
    # The text changes and the draft stops being accepted: drafted steps get slower.
    _run(controller, 4, 1000, 3000, 12 * PROBE_EVERY)
    assert _run(controller, 4, 1000, 3000, 4 * PROBE_EVERY) <= 4


def test_batch_sizes_are_measured_apart():
    controller = DraftController()
    _run(controller, 1, 9000, 3000, 3 * PROBE_EVERY)
    _run(controller, 20, 1000, 9000, 3 * PROBE_EVERY)
    rates = controller.summary()
    assert rates["1-1 rows"]["drafted"] > rates["1-1 rows"]["plain"]
    assert rates["16-31 rows"]["drafted"] < rates["16-31 rows"]["plain"]
