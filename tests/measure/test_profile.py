"""Sanity of the profile: numbers that must hold for any honest measurement."""

from __future__ import annotations

import pytest
import torch

import wattwise
from tests.cli.run_cli import run_json
from tests.helpers import linear_stack
from wattwise.measure.energy import rapl_package_domains
from wattwise.measure.flops import count_flops
from wattwise.measure.latency import QUICK_TIMING
from wattwise.models.registry import ModelOptions

REQUIRED_KEYS = {
    "parameters",
    "size_bytes",
    "flops_per_sample",
    "latency_ms",
    "throughput_per_s",
    "peak_memory_bytes",
    "quality",
    "energy_j_per_1k",
    "energy_source",
    "carbon_g_per_1k",
    "region",
}


@pytest.fixture(scope="module")
def digits_profile():
    return wattwise.profile("digits-cnn", batch_sizes=(1, 32))


def test_batch_32_takes_longer_than_batch_1_and_both_have_throughput(digits_profile):
    # 32 samples cost more than 1 on any machine; whether batching pays off here is a speed
    # question for bench/, not a property.
    assert digits_profile.latency_ms["32"].p50_ms > digits_profile.latency_ms["1"].p50_ms
    assert all(digits_profile.throughput_per_s[b] > 0 for b in ("1", "32"))


def test_fp32_size_is_four_bytes_per_parameter(digits_profile):
    expected = 4 * digits_profile.parameters
    assert abs(digits_profile.size_bytes - expected) / expected < 0.10


def test_digits_accuracy_meets_the_stated_floor(digits_profile):
    assert digits_profile.quality["accuracy"] >= 0.97


def test_latency_percentiles_are_ordered(digits_profile):
    for stats in digits_profile.latency_ms.values():
        assert stats.min_ms <= stats.p50_ms <= stats.p95_ms <= stats.p99_ms
        assert stats.repetitions >= 10


def test_energy_source_is_estimate_without_counters(digits_profile):
    expected = "rapl" if rapl_package_domains() else "estimate"
    assert digits_profile.energy_source == expected
    if expected == "estimate":
        assert digits_profile.energy_uncertainty_pct > 0
        assert "estimated" in digits_profile.energy_method
    assert digits_profile.energy_j_per_1k > 0
    assert digits_profile.carbon_g_per_1k > 0


def test_region_changes_carbon_not_energy():
    options = dict(batch_sizes=(8,), timing=QUICK_TIMING)
    france = wattwise.profile("digits-cnn", region="FR", **options)
    world = wattwise.profile("digits-cnn", **options)
    assert france.region == "FR" and world.region == "WORLD"
    assert "world average" in world.carbon_source
    france_per_joule = france.carbon_g_per_1k / france.energy_j_per_1k
    world_per_joule = world.carbon_g_per_1k / world.energy_j_per_1k
    assert france_per_joule == pytest.approx(56.0 / 3.6e6)
    assert world_per_joule > 5 * france_per_joule


def test_flops_of_linear_stack_equal_hand_count():
    model = linear_stack()
    hand_count = 2 * (64 * 128 + 128 * 128 + 128 * 10)  # 2 FLOPs per multiply-add, per sample
    assert count_flops(model, (torch.randn(7, 64),)) == hand_count


def test_factory_model_profiles_with_random_inputs():
    profile = wattwise.profile(
        "tests.helpers:linear_stack",
        batch_sizes=(1, 16),
        options=ModelOptions(input_shape="64"),
        timing=QUICK_TIMING,
    )
    assert profile.parameters == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert profile.quality["fidelity"] == pytest.approx(1.0)


def test_cli_json_has_every_documented_field():
    data = run_json("profile", "digits-cnn", "--batch-sizes", "1,32", "--region", "FR")
    assert set(data) >= REQUIRED_KEYS
    assert set(data["latency_ms"]["32"]) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert data["region"] == "FR"


@pytest.mark.slow
def test_minilm_profile_json():
    data = run_json("profile", "minilm", "--batch-sizes", "1,8", in_process=True)
    assert set(data) >= REQUIRED_KEYS
    assert data["quality"]["fidelity"] == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < data["quality"]["recall@10"] <= 1.0
    assert 20_000_000 < data["parameters"] < 25_000_000


@pytest.mark.gpu
def test_energy_source_is_nvml_on_cuda():
    profile = wattwise.profile(
        "digits-cnn", batch_sizes=(1, 256), device="cuda", timing=QUICK_TIMING
    )
    assert profile.energy_source == "nvml"
    # NVIDIA's documented ±5%, and the counter covers the whole GPU, shared with others.
    assert profile.energy_uncertainty_pct == 5
    assert "whole device" in profile.energy_method and "shared" in profile.energy_method
