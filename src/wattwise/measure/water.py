"""Water consumed to run a workload: on-site (data-centre cooling) plus off-site (generation).

litres = kWh × (WUE + off-site litres per kWh of the region's grid)

- On-site: the data centre's Water Usage Effectiveness (The Green Grid), litres of water
  consumed per kWh of IT energy. Default 1.8 L/kWh, the average on-site WUE of US data centres
  in Shehabi et al. (2016), "United States Data Center Energy Usage Report", LBNL-1005775;
  override it with your operator's figure (`--wue`; 0 for air-cooled or a desk machine).
- Off-site: the region's generation mix (Ember / Our World in Data, as shipped in codecarbon
  3.3.2) weighted by each source's operational water consumption (Macknick et al. 2012, NREL).
  The min/max of the reviewed estimates give the band.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from wattwise.errors import ConfigError

DEFAULT_WUE_L_PER_KWH = 1.8
WUE_SOURCE = "on-site WUE 1.8 L/kWh: US data-centre average, Shehabi et al. 2016 (LBNL-1005775)"
MIX_TABLE = "generation_mix.csv"
FACTOR_TABLE = "water_per_generation.csv"
LITRES_PER_GALLON = 3.78541
OFFSITE_SOURCE = (
    "off-site: grid generation mix (Ember/OWID via codecarbon 3.3.2, "
    "wattwise/data/generation_mix.csv) × operational water consumption per source "
    "(Macknick et al. 2012, NREL, Environ. Res. Lett. 7 045802; wattwise/data/water_per_generation.csv)"
)
J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class WaterIntensity:
    """Litres of water consumed per kWh of IT energy in a region.

    Attributes:
        region: ISO 3166 alpha-2 code, or "WORLD".
        onsite_l_per_kwh: the data centre's WUE (litres per kWh of IT energy).
        offsite_l_per_kwh: generation water of the grid mix, median factors.
        offsite_l_per_kwh_low / _high: the same with the min / max factors (the band).
        year: the year of the generation mix.
        source: where every figure comes from.
    """

    region: str
    onsite_l_per_kwh: float
    offsite_l_per_kwh: float
    offsite_l_per_kwh_low: float
    offsite_l_per_kwh_high: float
    year: int
    source: str

    @property
    def total_l_per_kwh(self) -> float:
        """On-site plus off-site, median factors."""
        return self.onsite_l_per_kwh + self.offsite_l_per_kwh


def _data_lines(name: str) -> list[str]:
    text = resources.files("wattwise.data").joinpath(name).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@cache
def _factors() -> dict[str, tuple[float, float, float]]:
    """Source → (median, min, max) litres per kWh."""
    table = {}
    for row in csv.DictReader(_data_lines(FACTOR_TABLE)):
        scale = LITRES_PER_GALLON / 1000.0  # gal/MWh → L/kWh
        table[row["source"]] = tuple(
            float(row[f"gal_per_mwh_{k}"]) * scale for k in ("median", "min", "max")
        )
    return table


@cache
def _mixes() -> dict[str, tuple[dict[str, float], int]]:
    """ISO code (alpha-2 and alpha-3) → (source → TWh, year); "WORLD" is the sum of all rows."""
    table: dict[str, tuple[dict[str, float], int]] = {}
    world: dict[str, float] = {}
    for row in csv.DictReader(_data_lines(MIX_TABLE)):
        mix = {source: float(row[source]) for source in _factors()}
        for source, twh in mix.items():
            world[source] = world.get(source, 0.0) + twh
        entry = (mix, int(row["year"]))
        table[row["iso2"].upper()] = entry
        table[row["iso3"].upper()] = entry
    table["WORLD"] = (world, 2023)
    return table


def water_intensity(region: str | None, wue_l_per_kwh: float | None = None) -> WaterIntensity:
    """Water per kWh for an ISO country code (None: the world mix), with the given on-site WUE.

    Example:
        water_intensity("FR").total_l_per_kwh   # ≈ 1.8 on-site + ≈ 2.4 off-site
    """
    wue = DEFAULT_WUE_L_PER_KWH if wue_l_per_kwh is None else float(wue_l_per_kwh)
    if wue < 0:
        raise ConfigError(f"--wue must be ≥ 0 litres per kWh, got {wue}")
    key = (region or "WORLD").strip().upper()
    mixes = _mixes()
    if key not in mixes:
        raise ConfigError(
            f"unknown region {region!r} for water: use an ISO country code such as FR, US or DE "
            "(see wattwise/data/generation_mix.csv)"
        )
    mix, year = mixes[key]
    total_twh = sum(mix.values())
    if total_twh <= 0:
        raise ConfigError(f"region {region!r} has no generation mix; pick another region")
    factors = _factors()
    offsite = [sum(mix[s] * factors[s][i] for s in mix) / total_twh for i in range(3)]
    onsite_source = (
        WUE_SOURCE if wue_l_per_kwh is None else f"on-site WUE {wue:g} L/kWh (given by the user)"
    )
    return WaterIntensity(
        key, wue, offsite[0], offsite[1], offsite[2], year, f"{onsite_source}; {OFFSITE_SOURCE}"
    )


def water_litres(energy_j: float, intensity: WaterIntensity) -> float:
    """Litres of water for `energy_j` joules (on-site + off-site, median factors)."""
    return energy_j / J_PER_KWH * intensity.total_l_per_kwh


def water_band_litres(energy_j: float, intensity: WaterIntensity) -> tuple[float, float]:
    """(low, high) litres: the off-site min/max factors; on-site WUE as given."""
    kwh = energy_j / J_PER_KWH
    return (
        kwh * (intensity.onsite_l_per_kwh + intensity.offsite_l_per_kwh_low),
        kwh * (intensity.onsite_l_per_kwh + intensity.offsite_l_per_kwh_high),
    )
