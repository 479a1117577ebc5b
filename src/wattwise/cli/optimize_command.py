"""`wattwise optimize MODEL`: the main job."""

from __future__ import annotations

import psutil
import typer

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, MODEL_FLAGS, print_json
from wattwise.durations import parse_duration
from wattwise.models.registry import ModelOptions
from wattwise.progress import result_console


@app.command()
def optimize(
    model: str = typer.Argument(..., help="Model spec (built-in, HF dir, module:factory)."),
    budget: str = typer.Option(
        None,
        "--budget",
        help='e.g. "accuracy_drop<=0.01", "fidelity>=0.99", "recall@10_drop<=0.01".',
    ),
    objective: str = typer.Option(
        "throughput",
        "--objective",
        help="throughput, latency, energy or size; tokens_per_s (causal LMs): search "
        "speculative-decoding drafts for the fastest greedy generation at batch 1.",
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Batch size the cost is measured at."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    space: str = typer.Option(
        None, "--space", help="Search space YAML (default: one suited to the device)."
    ),
    time_limit: str = typer.Option(
        "180s", "--time-limit", help="Stop starting new candidates after this."
    ),
    out: str = typer.Option(
        "report", "--out", help="Report directory (also holds the chosen variant)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search in --out."),
    seed: int = typer.Option(0, "--seed", help="Seed: same seed, same candidates and choice."),
    region: str = typer.Option(None, "--region", help="ISO country code for carbon."),
    workload: str = typer.Option(
        "fixed",
        "--workload",
        help="What speed is timed on: fixed (the kernel-level batch; text: 128 real tokens per "
        "input) or corpus (the task's real texts, length-sorted batches).",
    ),
    options: ModelOptions = MODEL_FLAGS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Find the cheapest variant within a quality budget; write report and chosen variant.

    Exit codes: 0 chosen, 2 bad input, 3 no candidate within budget, 130 interrupted.
    """
    from wattwise.api import optimize as run_optimize
    from wattwise.report.write import headline

    result = run_optimize(
        model,
        budget,
        objective,
        batch_size=batch_size,
        device=device,
        space=space,
        time_limit_s=parse_duration(time_limit, "--time-limit"),
        out=out,
        resume=resume,
        seed=seed,
        region=region,
        options=options,
        workload=workload,
        started_unix=psutil.Process().create_time(),  # start-up counts against the limit
    )
    if as_json:
        print_json(
            {
                "report": result.report_dir,
                "chosen_variant": result.chosen_variant,
                "chosen": result.chosen.label if result.chosen else None,
                "headline": headline(result),
                "partial": result.partial,
                "exit_code": result.exit_code,
                **_draft_fields(result),
            }
        )
    else:
        result_console.print(f"report: {result.report_dir}/index.html")
        if result.chosen_variant:
            result_console.print(f"chosen variant: {result.chosen_variant}")
        result_console.print(headline(result))
    if result.partial and "interrupted" in result.stop_reason:
        raise typer.Exit(130)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _draft_fields(result) -> dict:
    """A draft search's extra --json fields: how to use the choice and one row per candidate
    (`DraftSearchResult.table`)."""
    if not hasattr(result, "table"):
        return {}
    return {"chosen_role": result.chosen_role, "usage": result.usage, "candidates": result.table()}
