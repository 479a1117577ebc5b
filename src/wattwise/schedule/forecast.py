"""Carbon-intensity forecasts: a plain CSV or the Carbon Aware SDK's forecast JSON.

CSV (the shape of public grid-data exports): a header with a time column (`timestamp`,
`time`, `datetime` or `datetime_utc`), a region column (`region`, `location` or `zone`;
optional when `--region` names one region), an intensity column (`g_co2e_per_kwh`,
`carbon_intensity`, `value` or `rating`) and optionally `duration_minutes`. Lines starting
with `#` are comments.

JSON: the Green Software Foundation Carbon Aware SDK's `/emissions/forecasts/current`
answer (a list of forecasts, each with `forecastData: [{location, timestamp, duration, value}]`,
duration in minutes), one such forecast object, or a bare list of those data points.

A point without a duration lasts until the next point of its region (the last one: as long
as the one before it).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wattwise.errors import DataError

TIME_COLUMNS = ("timestamp", "time", "datetime", "datetime_utc")
REGION_COLUMNS = ("region", "location", "zone")
VALUE_COLUMNS = ("g_co2e_per_kwh", "carbon_intensity", "value", "rating")


@dataclass(frozen=True)
class IntensityPoint:
    """Grid intensity in one region over [start, start + duration)."""

    region: str
    start: datetime
    duration_s: float
    g_co2e_per_kwh: float

    @property
    def end(self) -> datetime:
        """When this point's interval ends."""
        return self.start + timedelta(seconds=self.duration_s)


# region → its points, sorted by start, not overlapping
Forecast = dict[str, list[IntensityPoint]]


def parse_time(text: str) -> datetime:
    """ISO 8601 → an aware UTC datetime (a naive time is taken as UTC; 'Z' accepted)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise DataError(
            f"bad timestamp {text!r}: use ISO 8601, e.g. 2023-06-01T12:00:00Z"
        ) from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _pick(columns: list[str], choices: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in columns}
    return next((lowered[c] for c in choices if c in lowered), None)


def _read_csv(path: Path, default_region: str | None) -> list[tuple[str, datetime, float, float]]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    reader = csv.DictReader(lines)
    columns = reader.fieldnames or []
    time_column, value_column = _pick(columns, TIME_COLUMNS), _pick(columns, VALUE_COLUMNS)
    region_column = _pick(columns, REGION_COLUMNS)
    if time_column is None or value_column is None:
        raise DataError(
            f"{path} needs a time column ({'/'.join(TIME_COLUMNS)}) and an intensity column "
            f"({'/'.join(VALUE_COLUMNS)}) in its header"
        )
    if region_column is None and not default_region:
        raise DataError(f"{path} has no region column; add one or pass a single --region")
    rows = []
    for number, row in enumerate(reader, start=2):
        try:
            value = float(row[value_column])
            minutes = float(row["duration_minutes"]) if row.get("duration_minutes") else 0.0
        except (TypeError, ValueError) as error:
            raise DataError(f"{path} row {number}: intensity is not a number; fix it") from error
        region = row[region_column].strip() if region_column else str(default_region)
        rows.append((region, parse_time(row[time_column]), value, minutes * 60.0))
    return rows


def _read_json(path: Path) -> list[tuple[str, datetime, float, float]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error.msg}); fix the file") from error
    forecasts = data if isinstance(data, list) else [data]
    points = []
    for item in forecasts:
        if isinstance(item, dict) and "forecastData" in item:
            points.extend(item["forecastData"])
        else:
            points.append(item)
    rows = []
    for point in points:
        try:
            rows.append(
                (
                    str(point["location"]),
                    parse_time(point["timestamp"]),
                    float(point["value"]),
                    float(point.get("duration") or 0.0) * 60.0,
                )
            )
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(
                f"{path}: a forecast point lacks location/timestamp/value ({error}); "
                "use the Carbon Aware SDK forecast format"
            ) from error
    return rows


def read_forecast(path: str | Path, default_region: str | None = None) -> Forecast:
    """Read a CSV or JSON forecast into region → sorted points (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"forecast file {path} not found; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise DataError(f"unsupported forecast file {path.name}: use .csv or .json")
    rows = _read_json(path) if suffix == ".json" else _read_csv(path, default_region)
    if not rows:
        raise DataError(f"{path} holds no forecast points")
    by_region: dict[str, list[tuple[datetime, float, float]]] = {}
    for region, start, value, duration_s in rows:
        if value < 0:
            raise DataError(f"{path}: negative intensity {value} for {region}; fix the data")
        by_region.setdefault(region, []).append((start, value, duration_s))
    return {region: _to_points(region, entries, path) for region, entries in by_region.items()}


def _to_points(region: str, entries, path: Path) -> list[IntensityPoint]:
    entries = sorted(entries, key=lambda e: e[0])
    points: list[IntensityPoint] = []
    for index, (start, value, duration_s) in enumerate(entries):
        if not duration_s:
            if index + 1 < len(entries):
                duration_s = (entries[index + 1][0] - start).total_seconds()
            elif points:
                duration_s = points[-1].duration_s
            else:
                raise DataError(f"{path}: {region} has one point and no duration; add more")
        if duration_s <= 0:
            raise DataError(f"{path}: {region} has two points at {start.isoformat()}; remove one")
        if points and start < points[-1].end:
            raise DataError(f"{path}: {region}'s points overlap at {start.isoformat()}")
        points.append(IntensityPoint(region, start, duration_s, value))
    return points
