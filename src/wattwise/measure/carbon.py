"""Grid carbon intensity per country, from the table in wattwise/data that names its source."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from wattwise.errors import ConfigError

TABLE_NAME = "grid_carbon_intensity.csv"
TABLE_SOURCE = (
    "Ember / Our World in Data energy mix 2022-2023 (as shipped in codecarbon 3.3.2), "
    "wattwise/data/grid_carbon_intensity.csv"
)


@dataclass(frozen=True)
class GridIntensity:
    """Carbon intensity of a region's electricity.

    Attributes:
        region: ISO 3166 alpha-2 code, or "WORLD".
        g_co2e_per_kwh: grams of CO2-equivalent per kilowatt-hour.
        year: the year the figure describes.
        source: where the figure comes from.
        note: set when a default was used (for example: no region given).
    """

    region: str
    g_co2e_per_kwh: float
    year: int
    source: str
    note: str = ""


@cache
def _table() -> dict[str, tuple[float, int, str]]:
    text = resources.files("wattwise.data").joinpath(TABLE_NAME).read_text()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    table = {}
    for row in csv.DictReader(lines):
        entry = (float(row["g_co2e_per_kwh"]), int(row["year"]), row["country"])
        table[row["iso2"].upper()] = entry
        table[row["iso3"].upper()] = entry
    return table


def grid_intensity(region: str | None) -> GridIntensity:
    """Intensity for an ISO country code (alpha-2 or alpha-3); None means the world average."""
    table = _table()
    if not region:
        value, year, _ = table["WORLD"]
        return GridIntensity("WORLD", value, year, TABLE_SOURCE, "no region given: world average")
    key = region.strip().upper()
    if key not in table:
        raise ConfigError(
            f"unknown region {region!r}: use an ISO country code such as FR, US, DE or NO "
            "(see wattwise/data/grid_carbon_intensity.csv)"
        )
    value, year, _ = table[key]
    return GridIntensity(key, value, year, TABLE_SOURCE)


def grams_at(energy_j: float, g_co2e_per_kwh: float) -> float:
    """gCO2e for `energy_j` joules at `g_co2e_per_kwh` (1 kWh = 3.6e6 J)."""
    return energy_j / 3.6e6 * g_co2e_per_kwh


def carbon_grams(energy_j: float, intensity: GridIntensity) -> float:
    """gCO2e for `energy_j` joules at the region's intensity."""
    return grams_at(energy_j, intensity.g_co2e_per_kwh)
