"""`wattwise serve MODEL` and `wattwise loadtest URL`."""

from __future__ import annotations

import typer
from rich.table import Table

from wattwise.cli import app
from wattwise.cli.common import (
    JSON_OPTION,
    TRUST_CODE_OPTION,
    OptionGroup,
    print_json,
    settings_flags,
)
from wattwise.errors import ConfigError
from wattwise.progress import info
from wattwise.progress import result_console as console
from wattwise.serve.settings import ServeSettings

SWAP_OPTION = typer.Option(
    False, "--swap", help="Roll the server at --address to MODEL with zero downtime, then exit."
)
# The flags of `wattwise serve` in --help order: ServeSettings fields, and --swap among them.
SERVE_FLAGS = OptionGroup(
    flags=(
        *settings_flags(
            ServeSettings,
            "replicas",
            "max_batch_size",
            "batch_wait_ms",
            "host",
            "port",
            "grpc_port",
            "address",
            "api_key_env",
        ),
        ("swap", bool, SWAP_OPTION),
        *settings_flags(
            ServeSettings,
            "request_timeout_s",
            "max_ongoing_requests",
            "max_queued_requests",
            "max_body_bytes",
            "threads_per_replica",
            "ray_temp_dir",
            "replica_cpus",
            "ingress_batching",
            "min_replicas",
            "max_replicas",
            "target_ongoing_requests",
            "upscale_delay_s",
            "downscale_delay_s",
            "kv_cache_budget_bytes",
            "draft",
        ),
    )
)


@app.command()
def serve(
    model: str = typer.Argument(
        ..., help="Built-in name, variant dir (e.g. from optimize), HF dir or module:factory."
    ),
    options: dict = SERVE_FLAGS,
    trust_code: bool = TRUST_CODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve MODEL over HTTP on Ray Serve replicas until SIGTERM or Ctrl-C (then drain and stop)."""
    from wattwise.serve.server import (
        model_signature,
        run_until_signalled,
        start_server,
        swap_model,
    )

    swap = options.pop("swap")
    settings = ServeSettings.from_options(model, trust_code=trust_code, **options).checked()
    if swap:
        signature = swap_model(settings)
        if as_json:
            print_json({"swapped_to": signature.model, "address": settings.address})
        else:
            console.print(f"now serving {signature.model} (every replica ready)")
        return
    # A model that cannot load fails before anything is printed or started.
    signature = model_signature(settings)
    info(f"starting Ray and {settings.replicas} replica(s) of {model} ...")
    server = start_server(settings, signature)
    ready = {
        "url": server.url,
        "ray_address": server.ray_address,
        "model": server.signature.model,
        "replicas": settings.replicas,
        "openapi": f"{server.url}/openapi.json",
    }
    if server.signature.generates:
        ready["generate"] = f"{server.url}/v1/generate"
    if server.grpc_target:
        ready["grpc"] = server.grpc_target
    if as_json:
        print_json(ready)
    else:
        console.print(f"serving {ready['model']} at {ready['url']} (OpenAPI: {ready['openapi']})")
        if server.grpc_target:
            console.print(
                f"gRPC at {server.grpc_target}: wattwise.v1.Wattwise/Predict and /Model, "
                "JSON bodies as bytes (docs/serving.md)"
            )
        console.print(
            f"swap live: wattwise serve NEW_MODEL --swap --address {server.ray_address} "
            f"--port {settings.port}; stop: Ctrl-C"
        )
    import sys

    sys.stdout.flush()
    run_until_signalled(server)
    info("stopped: replicas drained, Ray shut down")


@app.command()
def loadtest(
    url: str = typer.Argument(..., help="Server base URL, e.g. http://127.0.0.1:8000"),
    clients: int = typer.Option(64, "--clients", help="Concurrent clients."),
    duration: str = typer.Option("30s", "--duration", help="How long, e.g. 30s, 2m."),
    inputs_per_request: int = typer.Option(
        1, "--inputs-per-request", help="Copies of the server's example input per request."
    ),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="Name of the environment variable holding the API key."
    ),
    generate: bool = typer.Option(
        False, "--generate", help="Causal LMs: Poisson /v1/generate requests (TTFT, TPOT)."
    ),
    rate: float = typer.Option(4.0, "--rate", help="--generate: mean requests per second."),
    max_new_tokens_range: str = typer.Option(
        "16,256", "--max-new-tokens-range", help="--generate: output lengths drawn from LOW,HIGH."
    ),
    prompt_words_range: str = typer.Option(
        "4,64", "--prompt-words-range", help="--generate: prompt words drawn from LOW,HIGH."
    ),
    seed: int = typer.Option(0, "--seed", help="--generate: seed of arrivals and lengths."),
    stop_at_eos: bool = typer.Option(
        False, "--stop-at-eos", help="--generate: let streams end early at end-of-text."
    ),
    grpc_target: str = typer.Option(
        None,
        "--grpc",
        help="Send the predictions over gRPC to HOST:PORT (serve --grpc-port) instead of HTTP.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Load-test a `wattwise serve` server: throughput, p50/p95/p99 latency, errors by status;
    with --generate, time to first token, time per output token and output tokens/s."""
    if generate and grpc_target:
        raise ConfigError("--generate streams over HTTP only; drop --grpc")
    if generate:
        from wattwise.serve.loadtest_generation import run_generation_loadtest

        generation = run_generation_loadtest(
            url,
            rate_per_s=rate,
            duration=duration,
            max_new_tokens_range=max_new_tokens_range,
            prompt_words_range=prompt_words_range,
            seed=seed,
            api_key_env=api_key_env,
            stop_at_eos=stop_at_eos,
        )
        print_json(generation.to_dict()) if as_json else _print_generation(generation)
        return
    from wattwise.serve.loadtest import run_loadtest

    result = run_loadtest(
        url, clients, duration, inputs_per_request, api_key_env, grpc_target=grpc_target
    )
    if as_json:
        print_json(result.to_dict())
        return
    target = f"gRPC {grpc_target}" if grpc_target else url
    table = Table(title=f"{target}: {clients} clients, {result.duration_s:.1f} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "requests", f"{result.requests:,} ({result.succeeded:,} ok, {result.failed} failed)"
    )
    table.add_row("throughput", f"{result.throughput_per_s:,.1f} req/s")
    table.add_row("inputs / s", f"{result.inputs_per_s:,.1f}")
    table.add_row(
        "latency p50 / p95 / p99",
        f"{result.latency_ms_p50:.1f} / {result.latency_ms_p95:.1f} / "
        f"{result.latency_ms_p99:.1f} ms",
    )
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors_by_status.items()) or "none"
    table.add_row("errors by status", errors)
    table.add_row("load generator CPU", f"{result.client_cpu_s:.1f} s")
    changes = result.replica_changes()
    if changes:
        timeline = ", ".join(f"{count} at {at_s:.1f} s" for at_s, count in changes)
        table.add_row("healthy replicas over time", timeline)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")


def _print_generation(result) -> None:
    """The generation load test as a table (units in the rows)."""
    table = Table(
        title=f"{result.url}: {result.rate_per_s:g} req/s Poisson, {result.duration_s:.1f} s"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "requests", f"{result.requests:,} ({result.succeeded:,} ok, {result.failed} failed)"
    )
    table.add_row("output tokens / s", f"{result.output_tokens_per_s:,.1f}")
    table.add_row(
        "time to first token p50 / p95 / p99",
        f"{result.ttft_ms_p50:.1f} / {result.ttft_ms_p95:.1f} / {result.ttft_ms_p99:.1f} ms",
    )
    table.add_row(
        "time per output token p50 / p95 / p99",
        f"{result.tpot_ms_p50:.2f} / {result.tpot_ms_p95:.2f} / {result.tpot_ms_p99:.2f} ms",
    )
    errors = ", ".join(f"{k}: {v}" for k, v in result.errors_by_status.items()) or "none"
    table.add_row("errors", errors)
    if result.truncated_prompts:
        table.add_row("prompts shortened to fit the context", f"{result.truncated_prompts:,}")
    table.add_row("load generator CPU", f"{result.client_cpu_s:.1f} s")
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
