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

__all__ = ["compress", "federate", "federate_client", "generate", "optimize", "profile"]


def profile(
    model: str,
    batch_sizes: tuple[int, ...] = (1, 32),
    device: str = "cpu",
    region: str | None = None,
    threads: int | None = None,
    options: ModelOptions | None = None,
    timing: TimingSettings = TimingSettings(),
    show_progress: bool = False,
    wue_l_per_kwh: float | None = None,
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
        wue_l_per_kwh=wue_l_per_kwh,
    )


def optimize(model: str, budget: str | None = None, objective: str = "throughput", **settings):
    """Search for the cheapest variant within `budget` and write the report into `out`.

    Takes `wattwise.search.optimize.optimize`'s keyword settings (batch_size, device, space,
    time_limit_s, out, resume, seed, region, options). Returns the `OptimizeResult` with
    `report_dir` set. For a causal LM, `objective="tokens_per_s"` searches speculative-decoding
    drafts instead and returns a `DraftSearchResult` (docs/generation.md). Example:
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


def loadtest_generation(url: str, **options):
    """Load-test `/v1/generate` with Poisson arrivals and mixed prompt/output lengths; returns
    `wattwise.serve.loadtest_generation.GenerationLoadtestResult` (TTFT, TPOT, tokens/s).

    `options`: those of `run_generation_loadtest` (rate_per_s, duration, max_new_tokens_range,
    prompt_words_range, seed, api_key_env, timeout_s), the CLI's `--generate` options.
    Example:
        r = wattwise.api.loadtest_generation("http://127.0.0.1:8000", rate_per_s=4)
        print(r.ttft_ms_p99, r.tpot_ms_p50, r.output_tokens_per_s, r.failed)
    """
    from wattwise.serve.loadtest_generation import run_generation_loadtest

    return run_generation_loadtest(url, **options)


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


def schedule(command: list[str], duration: str | float, deadline: str = "24h", **options):
    """Run `command` in the greenest window before `deadline`; returns a `ScheduleResult`.

    Options are those of `wattwise.schedule.run.schedule_job` (forecast, regions, energy_kwh,
    report, inferences, wue_l_per_kwh, now, dry_run, clock, sleep, show_progress, on_plan).
    Example:
        r = wattwise.api.schedule(["make", "train"], "2h", "24h",
                                  forecast="examples/carbon-intensity-sample.csv",
                                  regions=["FR", "DE"], now="2023-06-01T00:00Z", dry_run=True)
        print(r.plan.region, r.plan.start, r.plan.saving_pct)
    """
    from wattwise.schedule.run import schedule_job

    options.setdefault("show_progress", False)
    return schedule_job(command, duration, deadline, **options)


def advise(path: str, select: list[str] | None = None):
    """Scan a file or directory for energy smells; returns `wattwise.advise.AdviseResult`.

    Example:
        result = wattwise.api.advise("train.py")
        for f in result.findings: print(f.location, f.code, f.fix)
    """
    from wattwise.advise.scan import advise as scan

    return scan(path, select)


def batch(model: str, input_path: str, out_dir: str, **options):
    """Embed/classify every input of a file, resumably; returns `wattwise.batch.BatchResult`.

    Options are those of `wattwise.batch.run.run_batch` (batch_size, chunk_size, device,
    region, options, candidates, wue_l_per_kwh, show_progress).
    Example:
        r = wattwise.api.batch("minilm", "texts.jsonl", "out/")
        print(r.batch_size, r.energy_j_per_input, r.energy_source, r.output_path)
    """
    from wattwise.batch.run import run_batch

    options.setdefault("show_progress", False)
    return run_batch(model, input_path, out_dir, **options)


def sweep(
    model: str,
    batch_sizes: tuple[int, ...] = (1, 8, 32),
    threads: tuple[int, ...] = (),
    power_limits_w: tuple[float, ...] = (),
    device: str = "cpu",
    eta: float = 0.5,
    out_dir: str | None = None,
    options: ModelOptions | None = None,
    show_progress: bool = False,
):
    """Sweep batch sizes / CPU threads / GPU power limits; returns `wattwise.sweep.SweepResult`.

    With `out_dir`, writes sweep.json and sweep.png (energy per inference vs latency and vs
    throughput). Example:
        r = wattwise.api.sweep("digits-cnn", batch_sizes=(1, 32), threads=(1, 2), eta=0.5)
        print(r.pick.batch_size, r.pick.threads, r.energy_source)
    """
    import json
    from pathlib import Path

    from wattwise.paths import atomic_write_bytes, atomic_write_text, ensure_writable_dir
    from wattwise.progress import progress_bar
    from wattwise.sweep.plot import sweep_plot
    from wattwise.sweep.run import check_sweep_settings, sweep_model

    check_sweep_settings(threads, power_limits_w, device, eta)
    loaded = open_model(model, options)
    total = len(batch_sizes) * max(1, len(threads)) * max(1, len(power_limits_w))
    with progress_bar(f"sweeping {model}", total, enabled=show_progress) as bar:
        result = sweep_model(
            loaded, batch_sizes, threads, power_limits_w, device, eta,
            progress=lambda p: bar.advance(f"bs {p.batch_size}: {p.latency_ms_p50:.2f} ms"),
        )  # fmt: skip
    if out_dir is not None:
        out = ensure_writable_dir(Path(out_dir))
        result.plot_path = str(out / "sweep.png")
        atomic_write_bytes(out / "sweep.png", sweep_plot(result))
        atomic_write_text(out / "sweep.json", json.dumps(result.to_dict(), indent=2))
    return result


def generate(
    model: str,
    prompt: str,
    max_new_tokens: int = 64,
    draft: str | None = None,
    kv_cache: bool = True,
    show_progress: bool = False,
    compiled: bool = False,
    ignore_eos: bool = False,
):
    """Greedy continuation of `prompt`; returns `wattwise.models.generation.GenerationResult`.

    `draft`: a causal-LM spec, "auto" to build one from `model` (keep 2 layers, distil,
    int8: `wattwise.compress.draft`), "lookup" for a lookup draft of it (n-gram tables of
    its own next tokens + prompt lookup, no network: `wattwise.compress.lookup_draft`; built
    on first use, then cached per model weights) or
    a saved lookup draft's directory; the target alone is run too for the speed-up.
    `compiled`: decode with transformers' static KV cache and a compiled forward; compiling
    takes seconds once per process and cache length (`result.compile_s`), so it pays for long
    outputs and repeated calls. `ignore_eos`: exactly `max_new_tokens` tokens, the end-of-text
    token never chosen (for timing: a short answer says little about speed).
    Example:
        r = wattwise.api.generate("tiny-lm", "Return the", 32, draft="auto")
        print(r.text, r.tokens_per_s, r.acceptance_rate, r.speedup)
    """
    import torch

    from wattwise.compress.draft import build_draft
    from wattwise.compress.lookup_draft import cached_lookup_draft
    from wattwise.models.generation import GenerationResult, greedy_generate, require_causal_lm
    from wattwise.models.lookup_draft import is_lookup_draft, load_lookup_draft

    loaded = open_model(model)
    target = require_causal_lm(loaded)
    tokenizer = loaded.extra["tokenizer"]
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    if input_ids.shape[1] == 0:
        from wattwise.errors import ConfigError

        raise ConfigError("the prompt is empty after tokenization; pass some text with --prompt")
    helper, helper_name = None, None
    if draft == "auto":
        helper = build_draft(loaded, show_progress=show_progress)
        helper_name, helper = helper.name, helper.module
    elif draft == "lookup":
        helper = cached_lookup_draft(loaded, show_progress=show_progress)
        helper_name = helper.description
    elif draft and is_lookup_draft(draft):
        helper = load_lookup_draft(draft)
        helper_name = f"{draft} ({helper.description})"
    elif draft:
        opened = open_model(draft)
        require_causal_lm(opened, "draft")
        helper_name, helper = opened.name, opened.module
    stop_at_eos = not ignore_eos
    if helper is not None:  # both sides warm before either is timed (first calls allocate)
        greedy_generate(target, input_ids, 2, kv_cache, helper, stop_at_eos=False)
        greedy_generate(target, input_ids, 2, kv_cache, stop_at_eos=False)
    tokens, stats = greedy_generate(
        target, input_ids, max_new_tokens, kv_cache, helper, stop_at_eos, compiled=compiled
    )
    gaps = sorted(stats.token_times_ms)
    result = GenerationResult(
        model=loaded.name,
        prompt=prompt,
        text=tokenizer.decode(tokens[0], skip_special_tokens=True),
        token_ids=tokens[0].tolist(),
        new_tokens=stats.new_tokens,
        kv_cache=kv_cache,
        seconds=stats.seconds,
        tokens_per_s=stats.tokens_per_s,
        ttft_ms=stats.ttft_ms,
        time_per_output_token_ms_p50=gaps[len(gaps) // 2] if gaps else None,
        compiled=compiled,
        compile_s=stats.compile_s,
    )
    if helper is not None:
        alone, alone_stats = greedy_generate(
            target, input_ids, max_new_tokens, kv_cache, stop_at_eos=stop_at_eos
        )
        result.draft = helper_name
        result.acceptance_rate = stats.acceptance_rate
        result.target_alone_tokens_per_s = alone_stats.tokens_per_s
        result.speedup = stats.tokens_per_s / alone_stats.tokens_per_s
        result.identical_to_target = bool(torch.equal(alone, tokens))
    return result
