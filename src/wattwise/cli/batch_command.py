"""`wattwise batch MODEL INPUT --out DIR`: embed or classify a large file, resumably."""

from __future__ import annotations

import typer

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, MODEL_FLAGS, parse_batch_sizes, print_json
from wattwise.models.registry import ModelOptions
from wattwise.progress import result_console as console


@app.command()
def batch(
    model: str = typer.Argument(..., help="Built-in name, variant dir, HF dir or module:factory."),
    input_path: str = typer.Argument(..., help="Inputs: .jsonl, .csv or .npz."),
    out: str = typer.Option(..., "--out", "-o", help="Output directory (rerun to resume)."),
    batch_size: int = typer.Option(
        None, "--batch-size", help="Fixed batch size (default: the one with least J/input)."
    ),
    candidates: str = typer.Option(
        "1,8,32,128", "--candidates", help="Batch sizes to measure when choosing."
    ),
    chunk_size: int = typer.Option(1024, "--chunk-size", help="Inputs per output chunk."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    region: str = typer.Option(None, "--region", help="ISO country code for carbon and water."),
    wue: float = typer.Option(None, "--wue", help="On-site water use, litres per kWh."),
    options: ModelOptions = MODEL_FLAGS.only("weights", "input_shape"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run MODEL over every input of INPUT_PATH at the most energy-efficient batch size."""
    from wattwise.api import batch as run_batch

    result = run_batch(
        model,
        input_path,
        out,
        batch_size=batch_size,
        chunk_size=chunk_size,
        device=device,
        region=region,
        options=options,
        candidates=parse_batch_sizes(candidates),
        wue_l_per_kwh=wue,
        show_progress=not as_json,
    )
    if as_json:
        print_json(result.to_dict())
        return
    label = (
        f"estimated ±{result.energy_uncertainty_pct:.0f}%"
        if result.energy_source == "estimate"
        else f"measured, {result.energy_source}"
    )
    for trial in result.batch_size_trials:
        console.print(
            f"  batch {trial['batch_size']:>4}: {trial['energy_j_per_input'] * 1000:.4g} mJ/input, "
            f"{trial['seconds_per_input'] * 1000:.4g} ms/input"
        )
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(
        f"{result.inputs} inputs → {result.output_path} (batch {result.batch_size}, "
        f"{result.chunks} chunks) in {result.seconds:.1f} s; energy {result.energy_j:.4g} J "
        f"({label}), {result.carbon_g:.3g} gCO2e, {result.water_l * 1000:.3g} mL water "
        f"({result.region})",
        markup=False,
    )
