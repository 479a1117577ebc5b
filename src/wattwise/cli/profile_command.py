"""`wattwise profile MODEL`."""

from __future__ import annotations

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import JSON_OPTION, MODEL_FLAGS, parse_batch_sizes, print_json
from wattwise.measure.energy import measured_scope
from wattwise.measure.profile import Profile
from wattwise.models.registry import ModelOptions
from wattwise.progress import result_console as console


@app.command()
def profile(
    model: str = typer.Argument(
        ..., help="Built-in name, variant dir, HF dir, .onnx file or module:factory."
    ),
    batch_sizes: str = typer.Option("1,32", "--batch-sizes", help="Comma-separated batch sizes."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    region: str = typer.Option(
        None, "--region", help="ISO country code for grid carbon intensity (e.g. FR)."
    ),
    threads: int = typer.Option(None, "--threads", help="Intra-op threads (default: torch's)."),
    wue: float = typer.Option(
        None, "--wue", help="On-site water use, litres per kWh (default 1.8: US data-centre mean)."
    ),
    options: ModelOptions = MODEL_FLAGS,
    as_json: bool = JSON_OPTION,
) -> None:
    """Measure what running MODEL costs: size, FLOPs, latency, throughput, memory, quality, energy, carbon."""
    from wattwise.api import profile as run_profile

    sizes = parse_batch_sizes(batch_sizes)
    result = run_profile(
        model,
        sizes,
        device,
        region,
        threads,
        options,
        show_progress=not as_json,
        wue_l_per_kwh=wue,
    )
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(profile_table(result), soft_wrap=False)
        if result.generation:
            console.print(generation_table(result), soft_wrap=False)
        for note in result.notes:
            console.print(f"note: {note}")


def generation_table(p: Profile) -> Table:
    """A rich table of a causal LM's generation costs (`Profile.generation`)."""
    g = p.generation
    table = Table(title=f"generation: {g['prompt_tokens']}-token prompts, {g['new_tokens']} new")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    ttft, tpot = g["ttft_ms"], g["time_per_output_token_ms"]
    table.add_row("time to first token", f"p50 {ttft['p50_ms']:.2f} ms", "batch 1, KV cache")
    table.add_row(
        "time per output token",
        f"p50 {tpot['p50_ms']:.2f} / p95 {tpot['p95_ms']:.2f} / p99 {tpot['p99_ms']:.2f} ms",
        f"batch 1, {tpot['repetitions']} gaps",
    )
    for size, rate in g["tokens_per_s"].items():
        table.add_row(f"tokens/s bs={size}", f"{rate:,.1f}", "generated tokens / wall second")
    table.add_row(
        "peak memory growth",
        f"{g['peak_memory_bytes'] / 1e6:.1f} MB",
        memory_how(g["memory_source"]),
    )
    table.add_row("KV cache", f"{g['kv_cache_bytes'] / 1e6:.3f} MB", "computed from its shapes")
    label = (
        f"estimated ±{g['energy_uncertainty_pct']:.0f}%"
        if g["energy_source"] == "estimate"
        else f"measured, {g['energy_source']}"
    )
    table.add_row("energy / 1k tokens", f"{g['energy_j_per_1k_tokens']:.4g} J", label)
    return table


def energy_label(p: Profile) -> str:
    """'measured (rapl)' or 'estimated (±60%)': shown next to every energy figure."""
    if p.energy_source == "estimate":
        return f"estimated ±{p.energy_uncertainty_pct:.0f}%"
    return f"measured, {measured_scope(p.energy_source, p.energy_uncertainty_pct)}"


def memory_how(source: str) -> str:
    """How a peak-memory figure was read, in words (the JSON keeps the short source name)."""
    if source == "cpu_rss_growth":
        return (
            "RSS growth over the measured runs, sampled every 2 ms (memory the warm-up "
            "already holds is reused, not counted)"
        )
    if source == "cuda_max_allocated":
        return "CUDA max allocated above the level before the measured runs"
    return source


def ci95_text(value: float, half_width: float | None) -> str:
    """'95% CI 0.9531–0.9969' (the interval itself), or why there is none."""
    if half_width is None or half_width != half_width:
        return "no 95% CI (too few samples)"
    return f"95% CI {value - half_width:.4f}–{value + half_width:.4f}"


def profile_table(p: Profile) -> Table:
    """A rich table of one profile."""
    table = Table(title=f"{p.model} on {p.device}, {p.threads} threads", show_lines=False)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("how", style="dim")
    table.add_row("parameters", f"{p.parameters:,}", "weight elements")
    table.add_row("size", f"{p.size_bytes / 1e6:.3f} MB", "serialized weights")
    flops = f"{p.flops_per_sample / 1e6:.2f} MFLOP" if p.flops_per_sample is not None else "n/a"
    table.add_row("FLOPs / sample", flops, p.flops_note)
    for size in p.batch_sizes:
        stats = p.latency_ms[str(size)]
        table.add_row(
            f"latency bs={size}",
            f"p50 {stats.p50_ms:.2f} / p95 {stats.p95_ms:.2f} / p99 {stats.p99_ms:.2f} ms",
            f"{stats.repetitions} runs, IQR {stats.spread_pct:.1f}% of median",
        )
        table.add_row(
            f"throughput bs={size}", f"{p.throughput_at(size):,.1f} samples/s", "batch / p50"
        )
    table.add_row(
        "peak memory growth", f"{p.peak_memory_bytes / 1e6:.1f} MB", memory_how(p.memory_source)
    )
    for name, value in p.quality.items():
        table.add_row(
            name,
            f"{value:.4f}",
            f"{p.quality_split} split, n={p.quality_samples}, {ci95_text(value, p.quality_ci95.get(name))}",
        )
    table.add_row(
        "energy / inference",
        f"{p.energy_j_per_inference:.4g} J",
        f"{energy_label(p)}, bs={p.energy_batch_size}",
    )
    table.add_row("energy / 1k inferences", f"{p.energy_j_per_1k:.4g} J", energy_label(p))
    table.add_row(
        "carbon / 1k inferences",
        f"{p.carbon_g_per_1k:.4g} gCO2e",
        f"{p.region}, {p.carbon_intensity_g_per_kwh:.0f} gCO2e/kWh; {energy_label(p)}",
    )
    if p.water_l_per_1k is not None:
        low, high = p.water_l_per_1k_band or (p.water_l_per_1k, p.water_l_per_1k)
        table.add_row(
            "water / 1k inferences",
            f"{p.water_l_per_1k * 1000:.4g} mL",
            f"{p.region}, band {low * 1000:.3g}-{high * 1000:.3g} mL; on-site WUE + grid "
            f"generation; {energy_label(p)}",
        )
    return table
