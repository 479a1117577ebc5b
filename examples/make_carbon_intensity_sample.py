"""Regenerate examples/carbon-intensity-sample.csv (a MODELLED series, see that file's header).

Run: PYTHONPATH=src python examples/make_carbon_intensity_sample.py > examples/carbon-intensity-sample.csv
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

SOLAR_G_PER_KWH = 48.0  # codecarbon 3.3.2 carbon_intensity_per_source.json, "solar"
REGIONS = ("FR", "DE")
DAYS = ("2023-06-01", "2023-06-02")


def _rows(name: str) -> dict[str, dict[str, str]]:
    text = resources.files("wattwise.data").joinpath(name).read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {row["iso2"]: row for row in csv.DictReader(lines)}


def main() -> None:
    mixes, intensities = _rows("generation_mix.csv"), _rows("grid_carbon_intensity.csv")
    sources = ("coal", "gas", "oil", "nuclear", "hydroelectricity", "wind", "solar", "biofuel")
    shape = [max(0.0, math.sin(math.pi * (hour - 6) / 12)) for hour in range(24)]
    sample = Path(__file__).with_name("carbon-intensity-sample.csv")
    print(
        "".join(line + "\n" for line in sample.read_text().splitlines() if line[:1] == "#"), end=""
    )
    print("timestamp,region,g_co2e_per_kwh")
    for region in REGIONS:
        mix = mixes[region]
        total = sum(float(mix[s]) for s in (*sources, "other_renewable"))
        solar_share = float(mix["solar"]) / total
        mean = float(intensities[region]["g_co2e_per_kwh"])
        rest = (mean - solar_share * SOLAR_G_PER_KWH) / (1 - solar_share)
        for day in DAYS:
            for hour in range(24):
                share = solar_share * 24 * shape[hour] / sum(shape)
                value = share * SOLAR_G_PER_KWH + (1 - share) * rest
                print(f"{day}T{hour:02d}:00:00Z,{region},{value:.1f}")


if __name__ == "__main__":
    main()
