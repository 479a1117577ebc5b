"""`wattwise sweep MODEL`: the energy/time trade-off, and the pick under Zeus's cost."""

from __future__ import annotations

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, MODEL_FLAGS, parse_batch_sizes, print_json
from wattwise.models.inputs import parse_positive_numbers
from wattwise.models.registry import ModelOptions
from wattwise.progress import result_console as console
from wattwise.sweep.run import SweepResult


def _numbers(text: str | None, what: str) -> tuple[float, ...]:
    if not text:
        return ()
    return parse_positive_numbers(
        text,
        float,
        f"bad {what} {text!r}: give numbers like 200,300",
        f"bad {what} {text!r}: every value must be > 0",
    )


@app.command()
def sweep(
    model: str = typer.Argument(..., help="Built-in name, variant dir, HF dir or module:factory."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Batch sizes to sweep."),
    threads: str = typer.Option(None, "--threads", help="CPU thread counts to sweep, e.g. 1,2."),
    power_limits: str = typer.Option(
        None, "--power-limits", help="GPU power limits in W (NVML; needs root), e.g. 200,300,400."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    eta: float = typer.Option(
        0.5, "--eta", help="Zeus cost weight: 1 = energy only, 0 = time only."
    ),
    out: str = typer.Option(None, "--out", help="Directory for sweep.json and sweep.png."),
    options: ModelOptions = MODEL_FLAGS.only("weights", "input_shape"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure energy per inference vs latency/throughput; pick by η·E + (1−η)·P_max·T."""
    from wattwise.api import sweep as run_sweep

    result = run_sweep(
        model,
        batch_sizes=parse_batch_sizes(batch_sizes),
        threads=tuple(int(t) for t in _numbers(threads, "--threads")),
        power_limits_w=_numbers(power_limits, "--power-limits"),
        device=device,
        eta=eta,
        out_dir=out,
        options=options,
        show_progress=not as_json,
    )
    if as_json:
        print_json(result.to_dict())
        return
    console.print(sweep_table(result), soft_wrap=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    pick = result.pick
    console.print(
        f"pick (η={result.eta:g}, max power {result.max_power_w:g} W: {result.max_power_source}): "
        f"batch {pick.batch_size}"
        + (f", {pick.threads} threads" if pick.threads else "")
        + (f", {pick.power_limit_w:g} W" if pick.power_limit_w else ""),
        markup=False,
    )
    if result.plot_path:
        console.print(f"plot: {result.plot_path}", markup=False)


def sweep_table(result: SweepResult) -> Table:
    """One row per configuration, the pick marked."""
    estimate = result.energy_source == "estimate"
    band = (
        f" est. ±{result.energy_uncertainty_pct:.0f}%" if estimate else f" ({result.energy_source})"
    )
    table = Table(title=f"{result.model} on {result.device}: energy vs time")
    for column in ("batch", "threads", "power limit", "p50 ms", "inferences/s",
                   f"mJ/inference{band}", "Zeus cost (J)", "pick"):  # fmt: skip
        table.add_column(column, justify="right")
    for point in result.points:
        table.add_row(
            str(point.batch_size),
            str(point.threads) if point.threads else "-",
            f"{point.power_limit_w:g} W" if point.power_limit_w else "-",
            f"{point.latency_ms_p50:.2f}",
            f"{point.throughput_per_s:,.1f}",
            f"{point.energy_j_per_inference * 1000:.4g}",
            f"{point.cost:.4g}",
            "★" if point is result.pick else "",
        )
    return table
