"""Plan a job, wait for its window with a progress display, then run it.

Waiting writes nothing: a job interrupted while waiting (Ctrl-C, SIGTERM) leaves no file and
starts no process. The clock and the sleep are parameters so tests never wait for hours.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from wattwise.errors import ConfigError, DataError
from wattwise.measure.water import water_intensity, water_litres
from wattwise.progress import progress_bar
from wattwise.schedule.forecast import read_forecast
from wattwise.schedule.plan import SchedulePlan, plan_window

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class JobEnergy:
    """The job's energy and where the figure comes from."""

    kwh: float
    source: str


def job_energy(
    energy_kwh: float | None = None,
    report_path: str | Path | None = None,
    inferences: int | None = None,
) -> JobEnergy | None:
    """The job's energy: given in kWh, or read from a JSON report.

    A report with `energy_j` (a `wattwise batch` or train result) gives the job's energy; a
    profile (`energy_j_per_1k`) needs `inferences`, the number of inputs the job will process.
    """
    if energy_kwh is not None and report_path is not None:
        raise ConfigError("give either --energy-kwh or --profile, not both")
    if energy_kwh is not None:
        if energy_kwh <= 0:
            raise ConfigError(f"--energy-kwh must be > 0, got {energy_kwh}")
        return JobEnergy(energy_kwh, "given by the user (--energy-kwh)")
    if report_path is None:
        return None
    path = Path(report_path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read report {path} ({error}); pass a --json output") from error
    label = report.get("energy_source", "unknown source")
    band = report.get("energy_uncertainty_pct")
    label = f"{label} ±{band:.0f}%" if label == "estimate" and band else label
    if isinstance(report.get("energy_j"), int | float):
        return JobEnergy(report["energy_j"] / J_PER_KWH, f"{path.name}: energy_j ({label})")
    if isinstance(report.get("energy_j_per_1k"), int | float):
        if not inferences:
            raise ConfigError(
                f"{path.name} is a profile (energy per 1k inferences): pass --inferences N, "
                "the number of inputs the job processes"
            )
        kwh = report["energy_j_per_1k"] * inferences / 1000 / J_PER_KWH
        return JobEnergy(kwh, f"{path.name}: energy_j_per_1k × {inferences} ({label})")
    raise DataError(f"{path} has no energy_j or energy_j_per_1k; pass a profile or batch report")


def parse_moment(text: str | None, now: datetime) -> datetime:
    """'24h'/'90m' after `now`, or an ISO 8601 timestamp; None → `now`."""
    from wattwise.durations import parse_duration
    from wattwise.schedule.forecast import parse_time

    if text is None:
        return now
    if any(ch in text for ch in "-:T"):
        return parse_time(text)
    return now + timedelta(seconds=parse_duration(text))


def make_plan(
    forecast_path: str | Path | None,
    duration_s: float,
    deadline: datetime,
    now: datetime,
    regions: list[str] | None = None,
    energy: JobEnergy | None = None,
    wue_l_per_kwh: float | None = None,
) -> SchedulePlan:
    """Read the forecast (if any), choose the window, attach the job's carbon and water."""
    if forecast_path is None:
        home = regions[0] if regions else None
        plan = plan_window({}, duration_s, now, deadline, [home] if home else [])
        plan.notes = ["no forecast given (--forecast): no data to choose by, so the job runs now"]
    else:
        single = regions[0] if regions and len(regions) == 1 else None
        forecast = read_forecast(forecast_path, default_region=single)
        unknown = [r for r in regions or [] if r not in forecast]
        if regions and len(unknown) == len(regions):
            raise DataError(
                f"the forecast has no data for {', '.join(unknown)}; it has "
                f"{', '.join(sorted(forecast))}"
            )
        plan = plan_window(forecast, duration_s, now, deadline, regions)
        if unknown:
            plan.notes.append(f"no forecast for {', '.join(unknown)}: not considered")
    if energy is not None:
        plan.energy_kwh, plan.energy_source = energy.kwh, energy.source
        if plan.mean_intensity_g_per_kwh is not None:
            plan.carbon_g = energy.kwh * plan.mean_intensity_g_per_kwh
        if plan.now_mean_intensity_g_per_kwh is not None:
            plan.now_carbon_g = energy.kwh * plan.now_mean_intensity_g_per_kwh
        try:
            water = water_intensity(plan.region, wue_l_per_kwh)
            plan.water_l = water_litres(energy.kwh * J_PER_KWH, water)
            plan.water_source = f"{water.region} annual generation mix; {water.source}"
        except ConfigError:
            plan.notes.append(f"no generation mix for region {plan.region!r}: water not computed")
    return plan


def wait_for_window(
    plan: SchedulePlan,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    show_progress: bool = True,
) -> None:
    """Block until `plan.wait_s` seconds have passed on `clock`, showing a progress bar.

    SIGTERM is turned into KeyboardInterrupt so both leave the same way: nothing started.
    """
    if plan.wait_s <= 0:
        return
    previous = signal.getsignal(signal.SIGTERM)
    in_main = _is_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        target = clock() + plan.wait_s
        total = max(1, round(plan.wait_s))
        with progress_bar(f"waiting for {plan.start}", total, enabled=show_progress) as bar:
            done = 0
            while (left := target - clock()) > 0:
                sleep(min(1.0, left))
                elapsed = min(total, round(plan.wait_s - max(0.0, target - clock())))
                bar.advance(f"{max(0.0, target - clock()):,.0f} s left", elapsed - done)
                done = elapsed
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_command(command: list[str]) -> int:
    """Run the job's command in the foreground; its exit code."""
    if not command:
        return 0
    try:
        return subprocess.run(command, check=False).returncode
    except FileNotFoundError as error:
        raise ConfigError(
            f"command {command[0]!r} not found; check the command after --"
        ) from error


def utc_now(clock: Callable[[], float] = time.time) -> datetime:
    """`clock()` as an aware UTC datetime."""
    return datetime.fromtimestamp(clock(), tz=UTC)


@dataclass
class ScheduleResult:
    """The plan, and whether the command ran (and its exit code)."""

    plan: SchedulePlan
    ran: bool
    exit_code: int | None


def schedule_job(
    command: list[str],
    duration: str | float,
    deadline: str = "24h",
    forecast: str | Path | None = None,
    regions: list[str] | None = None,
    energy_kwh: float | None = None,
    report: str | Path | None = None,
    inferences: int | None = None,
    wue_l_per_kwh: float | None = None,
    now: str | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    show_progress: bool = True,
    on_plan: Callable[[SchedulePlan], None] | None = None,
) -> ScheduleResult:
    """Plan `command` into the greenest window before `deadline`, wait, run it.

    `now` (ISO 8601) plans as of another moment, e.g. inside a past forecast; the wait is
    then the chosen start minus that moment. `on_plan` sees the plan before any waiting.
    """
    from wattwise.durations import parse_duration

    duration_s = parse_duration(duration)
    current = utc_now(clock) if now is None else parse_moment(now, utc_now(clock))
    plan = make_plan(
        forecast,
        duration_s,
        parse_moment(deadline, current),
        current,
        regions,
        job_energy(energy_kwh, report, inferences),
        wue_l_per_kwh,
    )
    if on_plan is not None:
        on_plan(plan)
    if dry_run:
        return ScheduleResult(plan, False, None)
    wait_for_window(plan, clock, sleep, show_progress)
    return ScheduleResult(plan, True, run_command(command))
