"""Choose the start time (and region) that minimises a job's emissions before its deadline.

The job draws constant power for `duration_s`, so its emissions are
energy × (mean intensity over its window). Intensity is a step function over the forecast's
points, so the window's integral is piecewise linear in its start: its minimum lies where the
window's start or end meets a step edge, or at the earliest or latest allowed start. Checking those
candidates is exact; the tests compare it with a brute-force scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from wattwise.errors import ConfigError
from wattwise.schedule.forecast import Forecast, IntensityPoint


@dataclass
class SchedulePlan:
    """When and where to run a job, and what it saves against running now.

    Attributes:
        has_forecast: False when no forecast covers any allowed window: the job runs now.
        region: the chosen region; start/end: the chosen window (ISO 8601 UTC).
        wait_s: seconds from `now` to the chosen start.
        mean_intensity_g_per_kwh: mean gCO2e/kWh over the chosen window.
        now_region / now_mean_intensity_g_per_kwh: the baseline, starting now in the first
            region given (None when the forecast does not cover "now").
        saving_pct: percent less carbon than the baseline (None without a baseline).
        energy_kwh: the job's energy, when known; carbon_g / now_carbon_g follow from it.
        water_l / water_source: the job's water at the chosen region (annual mix), when known.
        notes: what the plan could not see or assumed.
    """

    has_forecast: bool
    now: str
    deadline: str
    duration_s: float
    region: str | None
    start: str
    end: str
    wait_s: float
    mean_intensity_g_per_kwh: float | None
    now_region: str | None
    now_mean_intensity_g_per_kwh: float | None
    saving_pct: float | None
    energy_kwh: float | None = None
    energy_source: str = ""
    carbon_g: float | None = None
    now_carbon_g: float | None = None
    water_l: float | None = None
    water_source: str = ""
    candidates_checked: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def window_mean_intensity(
    points: list[IntensityPoint], start: datetime, duration_s: float
) -> float | None:
    """Mean gCO2e/kWh over [start, start + duration), or None if the points leave a gap."""
    end = start + timedelta(seconds=duration_s)
    covered, weighted = 0.0, 0.0
    for point in points:
        overlap = (min(end, point.end) - max(start, point.start)).total_seconds()
        if overlap > 0:
            covered += overlap
            weighted += overlap * point.g_co2e_per_kwh
    if covered < duration_s - 1e-6:
        return None
    return weighted / duration_s


def candidate_starts(
    points: list[IntensityPoint], duration_s: float, earliest: datetime, latest: datetime
) -> list[datetime]:
    """Starts where the window's start or end meets a step edge, within [earliest, latest],
    and both ends of that range (the integral is linear between these points)."""
    length = timedelta(seconds=duration_s)
    edges = {p.start for p in points} | {p.end for p in points}
    starts = {earliest, latest} | edges | {edge - length for edge in edges}
    return sorted(s for s in starts if earliest <= s <= latest)


def plan_window(
    forecast: Forecast,
    duration_s: float,
    now: datetime,
    deadline: datetime,
    regions: list[str] | None = None,
) -> SchedulePlan:
    """The greenest window of `duration_s` starting at or after `now` and ending by `deadline`.

    Ties go to the earlier start, then to the region listed first. Example:
        plan_window(read_forecast("examples/carbon-intensity-sample.csv"), 7200, now, now + day)
    """
    if duration_s <= 0:
        raise ConfigError(f"--duration must be > 0, got {duration_s} s")
    latest = deadline - timedelta(seconds=duration_s)
    if latest < now:
        raise ConfigError(
            f"the job ({duration_s / 3600:.2f} h) cannot finish before the deadline "
            f"{deadline.isoformat()}; give a later --deadline or a shorter --duration"
        )
    names = regions or sorted(forecast)
    best: tuple[float, datetime, int, str] | None = None
    checked = 0
    for order, region in enumerate(names):
        points = forecast.get(region, [])
        for start in candidate_starts(points, duration_s, now, latest):
            mean = window_mean_intensity(points, start, duration_s)
            checked += 1
            if mean is not None and (best is None or (mean, start, order) < best[:3]):
                best = (mean, start, order, region)
    home = names[0] if names else None
    baseline = window_mean_intensity(forecast.get(home, []), now, duration_s) if home else None
    if best is None:
        missing = [r for r in names if r not in forecast]
        reason = f" (no data for {', '.join(missing)})" if missing else ""
        mean, start, region, baseline, saving = None, now, home, None, None
        notes = [
            "no forecast covers any window between now and the deadline"
            f"{reason}: no data to choose by, so the job runs now"
        ]
    else:
        mean, start, _, region = best
        saving = (1 - mean / baseline) * 100 if baseline else None
        notes = []
        if baseline is None:
            notes.append(f"the forecast does not cover a start now in {home}: no saving computed")
    return SchedulePlan(
        has_forecast=best is not None,
        now=now.isoformat(),
        deadline=deadline.isoformat(),
        duration_s=duration_s,
        region=region,
        start=start.isoformat(),
        end=(start + timedelta(seconds=duration_s)).isoformat(),
        wait_s=(start - now).total_seconds(),
        mean_intensity_g_per_kwh=mean,
        now_region=home,
        now_mean_intensity_g_per_kwh=baseline,
        saving_pct=saving,
        candidates_checked=checked,
        notes=notes,
    )
