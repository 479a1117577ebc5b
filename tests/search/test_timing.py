"""Paired timing, the hardware probe and the order it gives: the parts of optimize's clock."""

from __future__ import annotations

import itertools
import time

import torch
from torch import nn

from tests.helpers import linear_stack
from wattwise.compress.recipe import Recipe
from wattwise.search.deadline import Deadline, training_steps_that_fit
from wattwise.search.machine import machine_info
from wattwise.search.ordering import NOT_WORTH_STARTING, order_candidates
from wattwise.search.probe import Priors, probe
from wattwise.search.space import make_candidate
from wattwise.search.timing import time_against_original


def _sleeper(seconds: float):
    return lambda: time.sleep(seconds)


def test_ratio_of_a_twice_as_slow_call_is_about_half():
    timing = time_against_original(_sleeper(0.004), _sleeper(0.002), slice_s=3.0, precision=0.05)
    assert timing.status == "measured" and timing.pairs >= 3
    assert timing.ratio_low <= timing.ratio <= timing.ratio_high
    assert 0.35 < timing.ratio < 0.65  # sleep() overshoots a little; far from 1 either way


def test_far_slower_candidate_is_abandoned_after_two_pairs():
    timing = time_against_original(
        _sleeper(0.05), _sleeper(0.0005), slice_s=10.0, abandon_below=0.5
    )
    assert timing.status == "abandoned" and timing.pairs == 2
    assert timing.reason.endswith("half the best so far)") and "x after 2 batches" in timing.reason
    assert timing.seconds < 5.0


def test_hanging_candidate_times_out_at_its_slice():
    started = time.perf_counter()
    timing = time_against_original(_sleeper(30), _sleeper(0.001), slice_s=0.5)
    assert timing.status == "timeout" and "did not finish" in timing.reason
    assert time.perf_counter() - started < 5.0


def test_probe_measures_paths_within_its_budget():
    model = linear_stack()
    started = time.perf_counter()
    priors = probe(model, (torch.randn(16, 64),), machine_info(), budget_s=30.0)
    assert priors.shape[1:] == (128, 128) and priors.fp32_ms > 0
    assert "torch_ao_int8" in priors.ratios and all(r > 0 for r in priors.ratios.values())
    assert time.perf_counter() - started < 60
    empty = probe(nn.Sequential(nn.ReLU()), (torch.randn(2, 3),), machine_info())
    assert not empty.ratios and "no Linear" in empty.failures["all"]


def _candidate(recipe: dict, peer: str = ""):
    return make_candidate("f", 0, recipe, peer=peer)


def test_order_puts_likely_winners_first_peers_last_and_skips_hopeless():
    priors = Priors(ratios={"ort_int8": 2.5, "torch_bf16": 0.2, "torch_ao_int8": 1.4})
    ort = _candidate(
        {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": "onnxruntime"}
    )
    bf16 = _candidate({"steps": [{"cast": {"method": "bf16"}}], "backend": "eager"})
    torch_ao = _candidate(
        {"steps": [{"quantize": {"method": "int8_dynamic", "implementation": "torch_ao"}}]}
    )
    peer = _candidate(
        {"steps": [{"quantize": {"method": "int8_dynamic", "implementation": "torch_ao"}}],
         "backend": "eager"},
        peer="torch.ao default",
    )  # fmt: skip
    ordered = order_candidates([peer, bf16, torch_ao, ort], priors)
    assert [c for c, _ in ordered.order] == [ort, torch_ao, peer]
    ((skipped, ratio, why),) = ordered.not_started
    assert skipped is bf16 and ratio < NOT_WORTH_STARTING and "0.20x" in why
    assert not order_candidates([bf16], priors, speed_matters=False).not_started


def test_one_candidate_per_compute_path_before_any_paths_second():
    # A wrong prior for a whole path (the probe times kernels, not models) must not let that
    # path's variants use up the time before another path is tried once.
    priors = Priors(ratios={"ort_int8": 10.0, "torch_bf16": 3.9})
    steps = [{"quantize": {"method": "int8_dynamic", "granularity": g}} for g in ("per_channel", "per_tensor", "per_channel")]  # fmt: skip
    ort = [_candidate({"steps": [step], "backend": "onnxruntime"}) for step in steps]
    bf16 = [
        _candidate({"steps": [{"cast": {"method": "bf16"}}], "backend": backend})
        for backend in ("eager", "torch_compile")
    ]
    ordered = [c for c, _ in order_candidates([*ort, *bf16], priors).order]
    assert ordered == [ort[0], bf16[0], bf16[1], ort[1], ort[2]]


def test_candidates_that_train_come_after_those_that_do_not_whatever_their_prior():
    # Dropping 2 of 6 layers predicts 1.5x on top of int8, but it distils for minutes and
    # risks the budget: the plain int8 candidate is measured first (bench on AVX2: the drop
    # candidate first ate the time of every ONNX Runtime candidate).
    priors = Priors(ratios={"ort_int8": 4.0})
    int8 = {"quantize": {"method": "int8_dynamic"}}
    plain = _candidate({"steps": [int8], "backend": "onnxruntime"})
    dropped = _candidate(
        {"steps": [{"drop_layers": {"keep": 4}}, {"distill": {"steps": 150}}, int8],
         "backend": "onnxruntime"}
    )  # fmt: skip
    ordered = order_candidates([dropped, plain], priors, layer_count=6)
    assert [c for c, _ in ordered.order] == [plain, dropped]
    assert ordered.order[1][1] > ordered.order[0][1]  # despite the higher prior


def test_deadline_and_training_budget():
    deadline = Deadline(100.0)
    assert 0 < deadline.slice_s() <= 8.0
    assert training_steps_that_fit(150, 90.0, 0.1) == 150
    assert training_steps_that_fit(150, 15.5, 0.1) == 51
    assert training_steps_that_fit(150, 3.0, 0.1) is None
    assert Recipe().steps == []


def test_a_planned_candidate_is_measured_in_the_first_round_beside_the_unplanned():
    # The probe times kernels, not execution plans: the fused int8 graph with micro-batches on
    # two streams and the same graph run whole must both be measured before any second ORT one.
    priors = Priors(ratios={"ort_int8": 10.0, "torch_bf16": 3.9})
    int8 = {"quantize": {"method": "int8_dynamic"}}
    planned = _candidate(
        {"steps": [int8], "backend": {"name": "onnxruntime", "micro_batch": 2, "streams": 2}}
    )
    whole = _candidate({"steps": [int8], "backend": "onnxruntime"})
    per_tensor = _candidate(
        {"steps": [{"quantize": {"method": "int8_dynamic", "granularity": "per_tensor"}}],
         "backend": "onnxruntime"}
    )  # fmt: skip
    bf16 = _candidate({"steps": [{"cast": {"method": "bf16"}}], "backend": "eager"})
    ordered = [c for c, _ in order_candidates([planned, whole, per_tensor, bf16], priors).order]
    assert ordered == [planned, whole, bf16, per_tensor]


def test_disagreement_names_the_side_whose_time_moved():
    from wattwise.search.confirm import agreement
    from wattwise.search.timing import PairedTiming

    held_out = PairedTiming("measured", 4.85, 4.72, 4.99, 107.0, 513.4, 11, 1, 10.0, "")
    search = {"ratio": 6.47, "ratio_low": 6.29, "ratio_high": 6.65}
    moved = agreement({**search, "candidate_ms": 105.7, "original_ms": 681.5}, held_out)
    assert moved.startswith("differs") and "the original's time per batch changed -25%" in moved
    assert "candidate's +1%" in moved
    assert "machine's speed changed" in agreement(search, held_out)  # no per-side times
    close = {"ratio": 4.9, "ratio_low": 4.7, "ratio_high": 5.1}
    assert agreement(close, held_out).startswith("agrees")


def test_no_timed_call_starts_right_after_the_other_side_ran(monkeypatch):
    # A thread pool spinning after one side's call must not be timed against the other side:
    # every switch of side is preceded by an untimed pause.
    from wattwise.search import timing as timing_module

    events: list[str] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        if seconds == timing_module.SWITCH_PAUSE_S:
            events.append("pause")
        real_sleep(seconds if seconds != timing_module.SWITCH_PAUSE_S else 0.001)

    monkeypatch.setattr(timing_module.time, "sleep", recording_sleep)
    time_against_original(
        lambda: events.append("c") or real_sleep(0.002),
        lambda: events.append("o") or real_sleep(0.002),
        slice_s=1.0,
        min_pairs=6,
        precision=1e-9,
        max_pairs=6,
    )
    timed = events[events.index("pause") - 1 :]  # from the first pair on (after warm-ups)
    switches = [(a, b) for a, b in itertools.pairwise(timed) if {a, b} == {"c", "o"}]
    assert timed.count("pause") == 6 and not switches
