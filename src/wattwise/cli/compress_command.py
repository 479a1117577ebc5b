"""`wattwise compress MODEL --recipe recipe.yaml -o out/`."""

from __future__ import annotations

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, MODEL_FLAGS, parse_batch_sizes, print_json
from wattwise.models.registry import ModelOptions
from wattwise.progress import result_console


@app.command()
def compress(
    model: str = typer.Argument(
        ..., help="Model spec (built-in, HF dir, module:factory, variant)."
    ),
    recipe: str = typer.Option(..., "--recipe", "-r", help="Recipe YAML: steps and backend."),
    output: str = typer.Option(..., "--output", "-o", help="Variant directory to write."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    batch_sizes: str = typer.Option("1,32", "--batch-sizes", help="Batch sizes for the profile."),
    region: str = typer.Option(None, "--region", help="ISO country code for carbon."),
    seed: int = typer.Option(0, "--seed", help="Seed for calibration, training and sampling."),
    options: ModelOptions = MODEL_FLAGS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Apply a recipe to MODEL and save the result as a variant directory (atomically)."""
    from wattwise.compress.pipeline import compress as run_compress
    from wattwise.compress.recipe import Recipe

    parsed = Recipe.from_yaml(recipe)  # validate before loading anything
    sizes = parse_batch_sizes(batch_sizes)
    variant = run_compress(
        model,
        parsed,
        output,
        device=device,
        seed=seed,
        batch_sizes=sizes,
        region=region,
        show_progress=not as_json,
        options=options,
    )
    if as_json:
        print_json({"path": str(variant.path), "manifest": variant.manifest})
        return
    result_console.print(step_table(variant))
    from wattwise.cli.profile_command import profile_table

    result_console.print(profile_table(variant.profile))
    result_console.print(f"variant written to {variant.path}")


def step_table(variant) -> Table:
    """Before/after measures of every step."""
    table = Table(title=f"steps: {variant.manifest['recipe_text']}")
    for column in ("step", "params", "size MB", "MFLOP/sample", "p50 ms (bs32)", "quality (val)"):
        table.add_column(column, justify="right" if column != "step" else "left")
    for report in variant.reports:
        for label, snap in (("before", report.before), ("after", report.after)):
            if snap is None:
                continue
            flops = f"{snap.flops_per_sample / 1e6:.2f}" if snap.flops_per_sample else "n/a"
            quality = ", ".join(f"{k} {v:.4f}" for k, v in snap.quality.items())
            table.add_row(
                f"{report.step} [{label}]",
                f"{snap.parameters:,}",
                f"{snap.size_bytes / 1e6:.3f}",
                flops,
                f"{snap.latency_ms_p50:.2f}",
                quality,
            )
    return table
