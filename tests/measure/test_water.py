"""Water: the table arithmetic, the WUE override, and water in `profile --json` with its source."""

from __future__ import annotations

import csv
from importlib import resources

import pytest

from tests.cli.run_cli import run_json
from wattwise.errors import ConfigError
from wattwise.measure.water import (
    DEFAULT_WUE_L_PER_KWH,
    LITRES_PER_GALLON,
    water_band_litres,
    water_intensity,
    water_litres,
)


def _rows(name):
    text = resources.files("wattwise.data").joinpath(name).read_text()
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def test_offsite_water_is_the_mix_weighted_mean_of_the_cited_factors():
    factors = {
        r["source"]: float(r["gal_per_mwh_median"]) for r in _rows("water_per_generation.csv")
    }
    france = next(r for r in _rows("generation_mix.csv") if r["iso2"] == "FR")
    total = sum(float(france[s]) for s in factors)
    by_hand = sum(float(france[s]) * factors[s] for s in factors) / total * LITRES_PER_GALLON / 1000
    water = water_intensity("FR")
    assert water.offsite_l_per_kwh == pytest.approx(by_hand)
    assert water.offsite_l_per_kwh_low < water.offsite_l_per_kwh < water.offsite_l_per_kwh_high
    assert water.onsite_l_per_kwh == DEFAULT_WUE_L_PER_KWH
    assert "Macknick" in water.source and "Shehabi" in water.source


def test_wue_override_changes_only_the_onsite_part():
    default, dry = water_intensity("DE"), water_intensity("DE", wue_l_per_kwh=0.0)
    assert dry.offsite_l_per_kwh == default.offsite_l_per_kwh
    assert dry.total_l_per_kwh == pytest.approx(default.offsite_l_per_kwh)
    assert "given by the user" in dry.source
    one_kwh = 3.6e6
    assert water_litres(one_kwh, dry) == pytest.approx(dry.offsite_l_per_kwh)
    low, high = water_band_litres(one_kwh, dry)
    assert low <= water_litres(one_kwh, dry) <= high
    with pytest.raises(ConfigError):
        water_intensity("DE", wue_l_per_kwh=-1)
    with pytest.raises(ConfigError, match="unknown region"):
        water_intensity("ZZ")


def test_profile_json_carries_water_with_its_source():
    profile = run_json(
        "profile", "digits-cnn", "--batch-sizes", "8", "--region", "FR", in_process=True
    )
    assert profile["water_l_per_1k"] > 0
    low, high = profile["water_l_per_1k_band"]
    assert low <= profile["water_l_per_1k"] <= high
    assert "Macknick" in profile["water_source"] and "WUE" in profile["water_source"]
    per_kwh = profile["water_l_per_1k"] / (profile["energy_j_per_1k"] / 3.6e6)
    assert per_kwh == pytest.approx(water_intensity("FR").total_l_per_kwh)
