"""`wattwise optimize`: measure candidates under a quality budget, choose the cheapest.

The run holds its time limit (plus 10%) on any machine: a probe of a few seconds measures what
this CPU does with each compute path and orders the candidates by it; each candidate is timed
in alternation with the original within a slice of the limit and abandoned early when it is
far slower than the best so far; nothing starts that cannot finish. Candidates are ranked by
measured cost (never operation counts or method names), the original among them; the chosen
one is re-scored and re-timed on the test split, which the search never used. The best variant
so far is on disk at every moment (`best/`), and `--resume` skips candidates already measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from wattwise.compress.variant import copy_variant, open_model
from wattwise.errors import ConfigError
from wattwise.measure.allocator import steady_allocator
from wattwise.models.registry import LoadedModel, ModelOptions
from wattwise.paths import check_creatable_dir, ensure_writable_dir
from wattwise.progress import info
from wattwise.search.budget import default_budget, parse_budget
from wattwise.search.confirm import Confirmation, confirm
from wattwise.search.deadline import REPORT_S, Deadline
from wattwise.search.defaults import default_space
from wattwise.search.machine import machine_info
from wattwise.search.objective import parse_objective
from wattwise.search.optimize_drafts import search_drafts
from wattwise.search.ordering import order_candidates
from wattwise.search.pareto import front_ids
from wattwise.search.probe import Priors, probe
from wattwise.search.results import (
    CandidateResult,
    DraftSearchResult,
    OptimizeResult,
    SearchState,
)
from wattwise.search.runner import Search, SearchSettings
from wattwise.search.space import load_space_yaml


def _layer_count(loaded: LoadedModel) -> int | None:
    transformer = getattr(loaded.module, "transformer", None)
    layers = getattr(getattr(transformer, "encoder", None), "layer", None)
    return len(layers) if layers is not None else None


def _keep_best(out: Path):
    """A callback that keeps the best candidate so far in `out/best/` (atomic copy)."""

    def keep(ranked: list[CandidateResult]) -> None:
        best = next((r for r in ranked if r.id != "original"), None)
        if best is None:
            return
        marker = out / "best" / ".candidate"
        if marker.is_file() and marker.read_text() == best.id:
            return
        copy_variant(Path(best.variant_dir), out / "best", marker=best.id)

    return keep


def optimize(
    model: str,
    budget: str | None = None,
    objective: str = "throughput",
    *,
    batch_size: int = 32,
    device: str = "cpu",
    space: str | None = None,
    time_limit_s: float = 180.0,
    out: str | Path = "report",
    resume: bool = False,
    seed: int = 0,
    region: str | None = None,
    options: ModelOptions | None = None,
    started_unix: float | None = None,
    workload: str = "fixed",
) -> OptimizeResult | DraftSearchResult:
    """Search recipes × backends for the cheapest variant within the quality budget.

    Returns an `OptimizeResult`; the chosen variant is in `out/variant/`, the best so far in
    `out/best/`. The report is written by the caller (`wattwise.api.optimize` and the CLI do).
    `workload`: "fixed" times the fixed kernel-level batch (text: 128 real tokens per input);
    "corpus" times the task's real texts in length-sorted batches (text models).
    `started_unix`: when the user's clock started (the CLI passes its process start, so start-up
    counts against `time_limit_s`); default now.
    `objective="tokens_per_s"` (causal LMs) searches speculative-decoding drafts instead
    (`search.drafts`) and returns a `DraftSearchResult`; `batch_size` is then 1.
    Example:
        result = optimize("minilm", budget="fidelity>=0.99", objective="throughput")
    """
    deadline = Deadline(time_limit_s)
    if started_unix is not None:
        deadline.started -= max(0.0, time.time() - started_unix)
    if time_limit_s <= 0:
        raise ConfigError(f"--time-limit must be positive, got {time_limit_s:g} s; e.g. 180s")
    objective_spec = parse_objective(objective, batch_size)
    if objective_spec.generates:
        _check_generation_settings(space, workload, resume, device, region)
        return search_drafts(model, budget, deadline, out, seed=seed, options=options)
    check_creatable_dir(Path(out))  # fail fast, but create nothing before the input is valid
    allocator = steady_allocator()  # before the model loads: every timing sees the same malloc
    load_started = time.perf_counter()
    loaded = open_model(model, options)
    load_s = time.perf_counter() - load_started
    budget_spec = parse_budget(budget, loaded.task) if budget else default_budget(loaded.task)
    machine = machine_info()
    machine.allocator = allocator
    if space:
        search_space = load_space_yaml(space)
    else:
        search_space = default_space(loaded.task.output_kind, device, machine, _layer_count(loaded))
    state_settings = {
        "model": model,
        "budget": budget_spec.text(),
        "objective": objective_spec.name,
        "batch_size": batch_size,
        "device": device,
        "seed": seed,
        "space": space or "default",
        "workload": workload,
    }
    state = SearchState.load(Path(out), state_settings) if resume else SearchState(state_settings)
    out_dir = ensure_writable_dir(Path(out))
    settings = SearchSettings(
        budget=budget_spec,
        objective=objective_spec,
        out=out_dir,
        device=device,
        seed=seed,
        time_limit_s=time_limit_s,
        region=region,
        workload=workload,
    )
    search = Search(loaded, state, settings, deadline)
    partial, reason, priors = False, "", Priors()
    found = Confirmation()
    baseline = CandidateResult("original", "original", 0, "original (fp32, eager)", {})
    try:
        info(
            f"optimize {model}: budget {budget_spec.text()}, objective {objective_spec.name} "
            f"at batch {batch_size}, {len(search_space.ordered())} candidates, limit "
            f"{time_limit_s:.0f}s"
        )
        # At most 10% of the limit: the probe orders the search, it must not eat it.
        priors = probe(search.original().module, search.inputs, machine, 0.1 * time_limit_s)
        info(
            "hardware probe ("
            + f"{priors.seconds:.1f} s): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in priors.ratios.items())
            + (
                f"; conv ({priors.conv_share:.0%} of the FLOPs): "
                + ", ".join(f"{k} {v:.2f}x" for k, v in priors.conv_ratios.items())
                if priors.conv_ratios
                else ""
            )
        )
        baseline = search.measure_baseline()
        # Confirmation loads the variant (≈ the model's load time), scores the test split
        # (≈ one val scoring), times it; then the report is written.
        deadline.reserve_s = load_s + 2 * search.eval_s + deadline.slice_s() + REPORT_S
        ordered = order_candidates(
            search_space.ordered(),
            priors,
            _layer_count(loaded),
            speed_matters=objective_spec.depends_on_speed,
        )
        for candidate, prior, why in ordered.not_started:
            search.skip(candidate, prior, why)
        partial, reason = search.run(ordered.order, _keep_best(out_dir))
        found = confirm(search, search.ranked())
    except KeyboardInterrupt:
        partial, reason = True, "interrupted (Ctrl-C): partial results"
        baseline = state.baseline or baseline
    measured = [r for r in state.results if r.status == "measured"]
    members = ([baseline] if baseline.status == "measured" else []) + measured
    outcome = found.outcome or (
        "No candidate, not even the original, meets the budget on the held-out split."
        if not partial or "interrupted" not in reason
        else "Interrupted before a choice was made."
    )
    return OptimizeResult(
        model=model,
        budget=budget_spec,
        objective=objective_spec,
        device=device,
        seed=seed,
        time_limit_s=time_limit_s,
        baseline=baseline,
        candidates=list(state.results),
        front=front_ids(budget_spec, members),
        chosen=found.chosen,
        confirmation=found.to_dict(),
        chosen_variant=str(out_dir / "variant") if found.chosen else "",
        partial=partial,
        stop_reason=reason,
        elapsed_s=deadline.elapsed(),
        machine=machine,
        skipped_space=search_space.skipped,
        priors=priors.to_dict(),
        workload=search.workload.describe(),
        outcome=outcome,
        chosen_profile=found.chosen_profile.to_dict() if found.chosen_profile else None,
        baseline_profile=found.baseline_profile.to_dict() if found.baseline_profile else None,
    )


def _check_generation_settings(
    space: str | None, workload: str, resume: bool, device: str, region: str | None
) -> None:
    """The options the draft search does not take: a one-line error naming each."""
    refused = {
        "--space (the draft grid comes from the model's layers)": space,
        "--workload corpus (drafts are timed on held-out prompts)": workload != "fixed",
        "--resume (a draft search is short: run it again)": resume,
        "--device other than cpu (the draft search runs on cpu)": device != "cpu",
        "--region (the draft search reports tokens/s, not carbon)": region,
    }
    named = [option for option, given in refused.items() if given]
    if named:
        raise ConfigError(
            f"--objective tokens_per_s does not take {'; '.join(named)}; drop "
            f"{'it' if len(named) == 1 else 'them'}"
        )
