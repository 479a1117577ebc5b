"""The Python twins of the CLI commands. Each returns the dataclass its command prints."""

from __future__ import annotations

from pathlib import Path

from wattwise.compress.pipeline import compress
from wattwise.compress.variant import open_model, profile_overrides
from wattwise.measure.latency import TimingSettings
from wattwise.measure.profile import Profile, profile_model
from wattwise.models.registry import ModelOptions
from wattwise.search.optimize import optimize as search
from wattwise.search.results import OptimizeResult

__all__ = ["compress", "federate", "federate_client", "optimize", "profile"]


def profile(
    model: str,
    batch_sizes: tuple[int, ...] = (1, 32),
    device: str = "cpu",
    region: str | None = None,
    threads: int | None = None,
    options: ModelOptions | None = None,
    timing: TimingSettings = TimingSettings(),
    show_progress: bool = False,
    trust_code: bool = False,
) -> Profile:
    """Load `model` (any spec `open_model` accepts, a variant included) and measure it; see `Profile`.

    `trust_code=True` allows a variant built from a module:factory to import that code (the
    same as `options=ModelOptions(trust_code=True)`, which compress and optimize take).

    Example:
        p = wattwise.profile("digits-cnn", batch_sizes=(1, 32), region="FR")
        print(p.throughput_per_s["32"], p.energy_j_per_1k, p.energy_source)
    """
    if threads is not None and threads < 1:
        from wattwise.errors import ConfigError

        raise ConfigError(f"--threads must be ≥ 1, got {threads}")
    if trust_code:
        from dataclasses import replace

        options = replace(options or ModelOptions(), trust_code=True)
    loaded = open_model(model, options)
    return profile_model(
        loaded,
        batch_sizes,
        device=device,
        region=region,
        threads=threads,
        timing=timing,
        show_progress=show_progress,
        overrides=profile_overrides(loaded),
    )


def optimize(model: str, budget: str | None = None, objective: str = "throughput", **settings):
    """Search for the cheapest variant within `budget` and write the report into `out`.

    Takes `wattwise.search.optimize.optimize`'s keyword settings (batch_size, device, space,
    time_limit_s, out, resume, seed, region, options). Returns the `OptimizeResult` with
    `report_dir` set. Example:
        result = wattwise.optimize("minilm", budget="fidelity>=0.99", out="report")
    """
    from wattwise.report.write import write_report

    result: OptimizeResult = search(model, budget, objective, **settings)
    result.report_dir = str(write_report(result, Path(settings.get("out", "report"))))
    return result


def train(config, role: str = "primary", show_progress: bool = False):
    """Train from a train.yaml path (or a dict of its fields) as primary or standby.

    Returns a `wattwise.train.results.TrainRunResult`: final step, resume/promotion facts, checkpoint
    stalls, the replication loss window, energy with its source.

    Example:
        result = wattwise.api.train("train.yaml", role="primary")
        print(result.final_step, result.max_lag_steps, result.energy_j, result.energy_source)
    """
    from pathlib import Path

    from wattwise.train.config import load_settings, parse_settings
    from wattwise.train.run import run_training

    if isinstance(config, dict):
        settings = parse_settings(config, "config", Path.cwd())
    else:
        settings = load_settings(config)
    return run_training(settings, role=role, show_progress=show_progress)


def serve(model: str, block: bool = True, **options):
    """Serve `model` on Ray Serve replicas; returns the running `wattwise.serve.server.Server`.

    With `block=True` (the CLI's behaviour) it serves until SIGTERM/Ctrl-C, then drains and
    stops. With `block=False` it returns once every replica is ready; call `.stop()` (or use
    it in a `with` block). `options` are `ServeSettings` fields (replicas, max_batch_size,
    batch_wait_ms, host, port, address, api_key_env, min_replicas, ...), the CLI's options.
    Example:
        with wattwise.serve("digits-cnn", port=8100, block=False) as server:
            print(wattwise.loadtest(server.url, clients=16, duration="10s").throughput_per_s)
    """
    from wattwise.serve.server import run_until_signalled, start_server
    from wattwise.serve.settings import ServeSettings

    server = start_server(ServeSettings.from_options(model, **options))
    if block:
        run_until_signalled(server)
    return server


def loadtest(
    url: str,
    clients: int = 64,
    duration: str | float = "30s",
    inputs_per_request: int = 1,
    api_key_env: str | None = None,
):
    """Load-test a running server; returns `wattwise.serve.loadtest.LoadtestResult`.

    Example:
        r = wattwise.loadtest("http://127.0.0.1:8000", clients=64, duration="30s")
        print(r.throughput_per_s, r.latency_ms_p99, r.errors_by_status)
    """
    from wattwise.serve.loadtest import run_loadtest

    return run_loadtest(url, clients, duration, inputs_per_request, api_key_env)


def federate(settings=None, show_progress: bool = False, hooks=None, **options):
    """Federated training on Flower; returns `wattwise.federate.results.FederateResult`.

    Give a `FederateSettings` or its fields as keywords (partition and update compression as
    text, e.g. partition="dirichlet:0.3", compression="topk:0.1").
    Example:
        r = wattwise.api.federate(model="digits-cnn", clients=4, rounds=5, compression="int8")
        print(r.final_accuracy, r.total_up_bytes, r.total_energy_j, r.energy_source)
    """
    from wattwise.federate.job import federate as run_job
    from wattwise.federate.settings import FederateSettings, parse_compression, parse_partition

    if settings is None:
        if isinstance(options.get("partition"), str):
            options["partition"] = parse_partition(options["partition"])
        if isinstance(options.get("compression"), str):
            options["compression"] = parse_compression(options["compression"])
        settings = FederateSettings(**options)
    return run_job(settings, hooks=hooks, show_progress=show_progress)


def federate_client(
    server: str,
    data,
    model: str = "digits-cnn",
    partition_id: int = 0,
    compression: str = "none",
    state_dir=".",
    fault: str = "none",
    slow_s: float = 0.0,
    max_wait_s: float = 120.0,
) -> None:
    """Join a federate server at HOST:PORT and train on `data` (this client's .npz) until done.

    Example:
        wattwise.api.federate_client("10.0.0.5:9092", "my-part.npz", partition_id=3)
    """
    from wattwise.federate.client import join_server

    join_server(
        server, data, model, partition_id, compression, state_dir, fault, slow_s, max_wait_s
    )
