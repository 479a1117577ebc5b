"""`wattwise schedule ... -- COMMAND`: run a job in the greenest window before a deadline."""

from __future__ import annotations

import typer

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, print_json
from wattwise.progress import result_console as console
from wattwise.schedule.plan import SchedulePlan


@app.command(context_settings={"allow_interspersed_args": False})
def schedule(
    command: list[str] = typer.Argument(None, help="The job to run, after '--'."),
    duration: str = typer.Option(..., "--duration", help="How long the job runs, e.g. 2h, 30m."),
    deadline: str = typer.Option(
        "24h", "--deadline", help="Finish by: a delay after now (24h) or an ISO 8601 time."
    ),
    forecast: str = typer.Option(
        None, "--forecast", help="Carbon-intensity forecast: CSV or Carbon Aware SDK JSON."
    ),
    region: str = typer.Option(
        None, "--region", help="Region(s) to consider, comma-separated; the first is 'here'."
    ),
    energy_kwh: float = typer.Option(None, "--energy-kwh", help="The job's energy in kWh."),
    report: str = typer.Option(
        None, "--profile", help="A profile or batch --json report giving the job's energy."
    ),
    inferences: int = typer.Option(
        None, "--inferences", help="Inputs the job processes (with a profile's per-1k energy)."
    ),
    wue: float = typer.Option(None, "--wue", help="On-site water use, litres per kWh."),
    now: str = typer.Option(None, "--now", help="Plan as of this ISO 8601 time (default: now)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan only; run nothing."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Pick the start (and region) with the least carbon before the deadline, wait, run COMMAND."""
    from wattwise.api import schedule as run_schedule

    if not command and not dry_run:
        from wattwise.errors import ConfigError

        raise ConfigError("no command to run: put it after '--', or pass --dry-run")
    regions = [r.strip() for r in region.split(",") if r.strip()] if region else None
    result = run_schedule(
        command or [],
        duration,
        deadline,
        forecast=forecast,
        regions=regions,
        energy_kwh=energy_kwh,
        report=report,
        inferences=inferences,
        wue_l_per_kwh=wue,
        now=now,
        dry_run=dry_run,
        show_progress=not as_json,
        on_plan=(lambda plan: print_json(plan.to_dict())) if as_json else print_plan,
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def print_plan(plan: SchedulePlan) -> None:
    """The plan as a person reads it: now vs the chosen window, carbon and % saved."""
    for note in plan.notes:
        console.print(f"note: {note}", markup=False)
    if not plan.has_forecast:
        console.print(f"running now ({plan.now}) in {plan.region or 'the local region'}")
        return
    console.print(
        f"chosen: {plan.region}, {plan.start} → {plan.end} "
        f"(in {plan.wait_s / 3600:.2f} h), mean {plan.mean_intensity_g_per_kwh:.1f} gCO2e/kWh"
    )
    if plan.now_mean_intensity_g_per_kwh is not None:
        console.print(
            f"now:    {plan.now_region}, {plan.now}, "
            f"mean {plan.now_mean_intensity_g_per_kwh:.1f} gCO2e/kWh; "
            f"saving {plan.saving_pct:.1f}% of the job's carbon"
        )
    if plan.carbon_g is not None:
        now_text = f" (now: {plan.now_carbon_g:.1f} g)" if plan.now_carbon_g is not None else ""
        console.print(
            f"job: {plan.energy_kwh:.4g} kWh [{plan.energy_source}] → {plan.carbon_g:.1f} gCO2e"
            f"{now_text}",
            markup=False,
        )
    if plan.water_l is not None:
        console.print(f"water: {plan.water_l:.3g} L ({plan.water_source})", markup=False)
