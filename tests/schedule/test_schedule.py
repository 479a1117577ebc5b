"""schedule: the chosen window is the true minimum, never past the deadline, greener region wins."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

import wattwise.api
from tests.cli.run_cli import REPO, WATTWISE, assert_one_line_error, run_in_process
from wattwise.errors import ConfigError, DataError
from wattwise.schedule.forecast import read_forecast
from wattwise.schedule.plan import plan_window, window_mean_intensity

SAMPLE = REPO / "examples" / "carbon-intensity-sample.csv"
START = datetime(2023, 6, 1, tzinfo=UTC)


def brute_force(forecast, duration_s, now, deadline, regions, step_s=60):
    """Every start on a one-minute grid, every region: the least mean intensity."""
    best = None
    moment = now
    while moment + timedelta(seconds=duration_s) <= deadline:
        for region in regions:
            mean = window_mean_intensity(forecast[region], moment, duration_s)
            if mean is not None and (best is None or mean < best[0] - 1e-9):
                best = (mean, moment, region)
        moment += timedelta(seconds=step_s)
    return best


@pytest.mark.parametrize(
    ("duration_h", "now_h", "deadline_h", "regions"),
    [
        (2, 0, 24, ["DE"]),
        (3.5, 5.25, 20, ["DE"]),
        (1, 13.5, 30, ["FR"]),
        (2, 0, 24, ["DE", "FR"]),
        (7, 2, 48, ["FR", "DE"]),
    ],
)
def test_chosen_window_is_the_brute_force_minimum_on_the_sample(
    duration_h, now_h, deadline_h, regions
):
    forecast = read_forecast(SAMPLE)
    now, deadline = START + timedelta(hours=now_h), START + timedelta(hours=deadline_h)
    plan = plan_window(forecast, duration_h * 3600, now, deadline, regions)
    expected_mean, _, _ = brute_force(forecast, duration_h * 3600, now, deadline, regions)
    assert plan.mean_intensity_g_per_kwh == pytest.approx(expected_mean, abs=1e-9)
    assert datetime.fromisoformat(plan.end) <= deadline
    assert datetime.fromisoformat(plan.start) >= now


def test_two_regions_pick_the_greener_and_print_the_saving():
    done = run_in_process(
        "schedule",
        "--duration", "2h", "--deadline", "24h", "--forecast", str(SAMPLE),
        "--region", "DE,FR", "--now", "2023-06-01T00:00:00Z", "--energy-kwh", "1.2",
        "--dry-run", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["region"] == "FR" and plan["now_region"] == "DE"
    assert plan["saving_pct"] > 80  # FR's nuclear grid vs DE at midnight
    assert plan["carbon_g"] == pytest.approx(1.2 * plan["mean_intensity_g_per_kwh"])
    assert plan["water_l"] > 0 and "Macknick" in plan["water_source"]
    human = run_in_process(
        "schedule", "--duration", "2h", "--forecast", str(SAMPLE), "--region", "DE",
        "--now", "2023-06-01T00:00:00Z", "--dry-run",
    )  # fmt: skip
    assert "saving" in human.stdout and "%" in human.stdout


def test_deadline_is_never_exceeded_on_random_forecasts(tmp_path):
    import random

    rng = random.Random(0)
    for trial in range(25):
        step_s = rng.choice([900, 1800, 3600])
        rows = [(START + timedelta(seconds=i * step_s), rng.uniform(20, 600)) for i in range(60)]
        path = tmp_path / f"random-{trial}.csv"
        path.write_text(
            "timestamp,region,value\n" + "".join(f"{t.isoformat()},X,{v}\n" for t, v in rows)
        )
        forecast = read_forecast(path)
        duration_s = rng.uniform(0.2, 6) * 3600
        now = START + timedelta(seconds=rng.uniform(0, 5) * 3600)
        deadline = now + timedelta(seconds=duration_s + rng.uniform(0, 20) * 3600)
        plan = plan_window(forecast, duration_s, now, deadline, ["X"])
        assert datetime.fromisoformat(plan.end) <= deadline
        best = brute_force(forecast, duration_s, now, deadline, ["X"], step_s=60)
        if best is not None:
            assert plan.mean_intensity_g_per_kwh <= best[0] + 1e-9


def test_carbon_aware_sdk_json_reads_like_the_csv(tmp_path):
    forecast = read_forecast(SAMPLE)
    document = [
        {
            "location": "DE",
            "forecastData": [
                {"location": p.region, "timestamp": p.start.isoformat(), "duration": 60,
                 "value": p.g_co2e_per_kwh}
                for p in forecast["DE"]
            ],
        }
    ]  # fmt: skip
    path = tmp_path / "forecast.json"
    path.write_text(json.dumps(document))
    assert read_forecast(path)["DE"] == forecast["DE"]


def test_no_forecast_says_so_and_runs_now(tmp_path):
    marker = tmp_path / "ran"
    done = run_in_process("schedule", "--duration", "1h", "--", "touch", str(marker))
    assert done.returncode == 0, done.stderr
    assert "no data" in done.stdout and marker.exists()


def test_job_waits_on_an_injected_clock_then_runs(tmp_path):
    now = START + timedelta(hours=1)
    clock = {"t": now.timestamp()}
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock["t"] += 600  # ten minutes pass per tick: the 10 h wait ends in 60 ticks

    marker = tmp_path / "ran"
    result = wattwise.api.schedule(
        [sys.executable, "-c", f"open({str(marker)!r}, 'w')"], "2h", "24h",
        forecast=SAMPLE, regions=["DE"], clock=lambda: clock["t"], sleep=sleep,
    )  # fmt: skip
    assert result.ran and result.exit_code == 0 and marker.exists()
    assert result.plan.wait_s == pytest.approx(10 * 3600)
    assert clock["t"] >= datetime.fromisoformat(result.plan.start).timestamp()


def test_interrupt_while_waiting_leaves_nothing_behind(tmp_path):
    # Planned as of --now, so the 5 s wait starts when the CLI is ready, however slow its start.
    begin = START
    lines = ["timestamp,region,value,duration_minutes"]
    for second in range(60):
        value = 10 if second == 5 else 500
        lines.append(f"{(begin + timedelta(seconds=second)).isoformat()},X,{value},{1 / 60}")
    forecast = tmp_path / "f.csv"
    forecast.write_text("\n".join(lines) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    process = subprocess.Popen(
        [str(WATTWISE), "schedule", "--duration", "1s", "--deadline", "59s", "--forecast",
         str(forecast), "--now", begin.isoformat(), "--", "touch", "ran"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first_line = process.stdout.readline()  # the plan: printed before the wait starts
    assert first_line.startswith("chosen: X"), first_line
    waiting_since = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    time.sleep(max(0.0, waiting_since + 7 - time.monotonic()))  # past the planned start
    assert list(work.iterdir()) == []


def test_bad_inputs_are_one_line_errors():
    assert_one_line_error(
        run_in_process(
            "schedule", "--duration", "2h", "--deadline", "1h", "--forecast", str(SAMPLE),
            "--dry-run",
        ),
        "deadline",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="bad duration"):
        wattwise.api.schedule([], "2x", dry_run=True)
    with pytest.raises(DataError, match="no data for ZZ"):
        wattwise.api.schedule([], "1h", forecast=SAMPLE, regions=["ZZ"], dry_run=True)
