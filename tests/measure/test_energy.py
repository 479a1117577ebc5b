"""Energy sources: RAPL parsing on a sysfs-shaped tree, the estimate's arithmetic, carbon."""

from __future__ import annotations

import pytest

from wattwise.errors import ConfigError
from wattwise.measure.carbon import carbon_grams, grid_intensity
from wattwise.measure.energy import EstimatedEnergy, RaplEnergy, format_energy, rapl_package_domains


def _domain(root, name, label, energy_uj, max_uj=1_000_000):
    path = root / name
    path.mkdir()
    (path / "name").write_text(label)
    (path / "energy_uj").write_text(str(energy_uj))
    (path / "max_energy_range_uj").write_text(str(max_uj))
    return path


def test_rapl_uses_package_domains_only_and_handles_wraparound(tmp_path):
    package = _domain(tmp_path, "intel-rapl:0", "package-0", 999_000)
    _domain(tmp_path, "intel-rapl:0:0", "core", 5)  # nested: already inside package-0
    _domain(tmp_path, "intel-rapl:1", "psys", 7)  # not a package domain
    assert rapl_package_domains(tmp_path) == [package]
    source = RaplEnergy(rapl_package_domains(tmp_path))
    token = source.start()
    (package / "energy_uj").write_text("1000")  # wrapped past 1,000,000 µJ
    reading = source.stop(token)
    assert reading.energy_j == pytest.approx((1_000_000 - 999_000 + 1000) / 1e6)
    assert reading.source == "rapl" and not reading.is_estimate
    # Its documented band, and what it counts: the whole package, shared with other processes.
    assert reading.uncertainty_pct == 10
    assert "whole CPU package" in reading.method and "shared" in reading.method
    label = format_energy(reading.energy_j, reading.source, reading.uncertainty_pct)
    assert "measured, rapl ±10%, whole package, shared" in label


def test_estimate_says_it_is_an_estimate():
    source = EstimatedEnergy()
    token = source.start()
    sum(i * i for i in range(200_000))
    reading = source.stop(token)
    assert reading.is_estimate and reading.uncertainty_pct > 0
    assert reading.energy_j > 0
    assert "estimated" in format_energy(reading.energy_j, reading.source, reading.uncertainty_pct)


def test_carbon_per_region():
    assert grid_intensity("FR").g_co2e_per_kwh == pytest.approx(56.0)
    assert grid_intensity("fra").region == "FRA"
    assert carbon_grams(3.6e6, grid_intensity("NO")) == pytest.approx(30.1)
    assert grid_intensity(None).region == "WORLD"
    with pytest.raises(ConfigError, match="unknown region"):
        grid_intensity("Atlantis")
