"""`wattwise train --config train.yaml [--role primary|standby]`."""

from __future__ import annotations

import os

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, print_json
from wattwise.progress import result_console as console


@app.command()
def train(
    config: str = typer.Option(..., "--config", help="train.yaml: model, steps, replicas, lease."),
    role: str = typer.Option(
        "primary", "--role", help="primary trains now; standby waits and takes over when it dies."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train with replicated checkpoints; a standby promotes itself when the primary's lease expires."""
    from wattwise.api import train as run_train

    result = run_train(config, role=role, show_progress=not as_json)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    if as_json:
        print_json(result.to_dict())
        return
    console.print(summary_table(result), soft_wrap=False)
    for note in result.notes:
        console.print(f"note: {note}")


def summary_table(result) -> Table:
    """A rich table of one training run."""
    table = Table(title=f"wattwise train: {result.role}, lease epoch {result.epoch}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    resumed = "fresh start"
    if result.resumed_from_step is not None:
        resumed = f"step {result.resumed_from_step} from {result.resumed_from_replica}"
    table.add_row("final step", str(result.final_step), resumed)
    if result.promoted:
        promotion = f"{result.promotion_s:.2f} s" if result.promotion_s is not None else "n/a"
        table.add_row("promotion", promotion, "lease acquired → first resumed step")
    table.add_row("final loss", f"{result.final_loss:.4f}", "last step of this process")
    table.add_row("training time", f"{result.train_s:.1f} s", "wall clock, training loop")
    table.add_row(
        "checkpoints",
        str(result.checkpoints),
        f"{result.replication} replication, mean stall {result.stall_s_mean * 1000:.1f} ms",
    )
    table.add_row(
        "loss window",
        f"{result.max_lag_steps} steps / {result.max_lag_s:.2f} s",
        "largest lag: snapshotted but not yet on every replica",
    )
    if result.degraded:
        table.add_row("degraded replicas", ", ".join(result.degraded), "fell back to async")
    band = (
        f"estimated ±{result.energy_uncertainty_pct:.0f}%"
        if result.energy_source == "estimate"
        else f"measured, {result.energy_source}"
    )
    table.add_row("energy", f"{result.energy_j:.4g} J", band)
    if result.activation_memory:
        memory = result.activation_memory
        table.add_row(
            "activation memory",
            f"{memory['bytes_without'] / 1e6:.2f} → {memory['bytes_with'] / 1e6:.2f} MB",
            f"gradient checkpointing saves {memory['saving_pct']:.0f}%",
        )
    table.add_row("weights", str(result.weights_path), "safetensors")
    table.add_row("events", result.journal_path, "JSONL: per-step time, energy, lag")
    return table
