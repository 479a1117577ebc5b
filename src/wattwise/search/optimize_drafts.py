"""The entry of `optimize MODEL --objective tokens_per_s` (the draft search, `search.drafts`):
load and check the model, run the search within the deadline, save the choice, and return a
`DraftSearchResult` for the report."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from wattwise.compress.variant import copy_variant, open_model
from wattwise.errors import ConfigError
from wattwise.models.generation import greedy_generate, is_causal_lm
from wattwise.models.lookup_draft import is_lookup_draft
from wattwise.models.registry import ModelOptions
from wattwise.paths import check_creatable_dir, ensure_writable_dir
from wattwise.progress import info
from wattwise.search.budget import default_budget, parse_budget
from wattwise.search.deadline import REPORT_S, Deadline
from wattwise.search.draft_calls import PROMPTS, role_of
from wattwise.search.drafts import DraftSearch
from wattwise.search.machine import machine_info
from wattwise.search.objective import parse_objective
from wattwise.search.results import CandidateResult, DraftSearchResult


def search_drafts(
    model: str,
    budget: str | None,
    deadline: Deadline,
    out: str | Path,
    *,
    seed: int = 0,
    options: ModelOptions | None = None,
    decode: Callable = greedy_generate,
) -> DraftSearchResult:
    """The draft search (see the module docstring); `search.optimize.optimize` calls it for
    `objective="tokens_per_s"`, and `decode` is the greedy decoding function (tests pass a
    broken one). Example:
        result = search_drafts("tiny-lm", None, Deadline(120), "report")
    """
    objective = parse_objective("tokens_per_s", 1)
    check_creatable_dir(Path(out))  # fail fast, but create nothing before the input is valid
    load_started = time.perf_counter()
    loaded = open_model(model, options)
    load_s = time.perf_counter() - load_started
    if not is_causal_lm(loaded):
        raise ConfigError(
            f"--objective tokens_per_s searches speculative-decoding drafts and needs a causal "
            f"LM (tiny-lm, a Hugging Face causal-LM directory or a variant of one); {model!r} "
            "is not one: use throughput or latency"
        )
    budget_spec = parse_budget(budget, loaded.task) if budget else default_budget(loaded.task)
    out_dir = ensure_writable_dir(Path(out))
    search = DraftSearch(loaded, budget_spec, objective, out_dir, deadline, seed, decode)
    info(
        f"optimize {model}: drafts for tokens/s at batch 1 ({search.layers} layers), budget "
        f"{budget_spec.text()}, limit {deadline.limit_s:.0f}s"
    )
    partial, reason, found = False, "", {"attempts": []}
    try:
        search.measure_baseline()
        # Held-out check: a reload (≈ the model's load), the test references and checks, a
        # slice of timing; then the report.
        deadline.reserve_s = (
            load_s
            + search.measure_s("draft")
            + PROMPTS * search.call_s()
            + REPORT_S
            + 2 * search.eval_s  # an int8 target is re-scored on test, with the target
        )
        partial, reason = search.run()
        found = search.confirm()
    except KeyboardInterrupt:
        partial, reason = True, "interrupted (Ctrl-C): partial results"
    return _result(search, model, budget_spec, objective, found, partial, reason)


def remove_stale_choices(out: Path) -> None:
    """Remove OUT/draft and OUT/variant left by an earlier run: this run's report may choose the
    target alone, and `generate --draft OUT/draft` must not pick up an older run's draft. Only
    variant directories (with a variant.json) and lookup drafts are removed."""
    for name in ("draft", "variant"):
        path = Path(out) / name
        if (path / "variant.json").is_file() or is_lookup_draft(path):
            shutil.rmtree(path)


def _result(search, model, budget, objective, found, partial, reason) -> DraftSearchResult:
    chosen = found.get("chosen")
    role, directory, usage = "", "", f"wattwise generate {model} --prompt TEXT"
    if not partial:
        remove_stale_choices(search.out)
    if chosen is not None and role_of(chosen) == "compiled":
        role, usage = "compiled", f"wattwise generate {model} --compile --prompt TEXT"
    elif chosen is not None and chosen.id != "original":
        role = role_of(chosen)
        directory = str(search.out / ("draft" if role == "draft" else "variant"))
        copy_variant(Path(chosen.variant_dir), Path(directory))
        usage = (
            f"wattwise generate {model} --draft {directory} --prompt TEXT"
            if role == "draft"
            else f"wattwise generate {directory} --prompt TEXT"
        )
    baseline = search.baseline or CandidateResult("original", "original", 0, "target alone", {})
    outcome = found.get("outcome") or (
        "Interrupted before a choice was made."
        if "interrupted" in reason
        else "No candidate, not even the target alone, holds on the held-out prompts."
    )
    return DraftSearchResult(
        model=model,
        budget=budget,
        objective=objective,
        device="cpu",
        seed=search.seed,
        time_limit_s=search.deadline.limit_s,
        baseline=baseline,
        candidates=search.results,
        chosen=chosen,
        chosen_variant=directory,
        chosen_role=role,
        usage=usage,
        workload=(
            f"{PROMPTS} held-out prompts (val in the search, test in the check), "
            f"{search.new_tokens} new tokens each, greedy, batch 1"
        ),
        confirmation={k: v for k, v in found.items() if k not in ("chosen", "outcome")},
        partial=partial,
        stop_reason=reason,
        elapsed_s=search.deadline.elapsed(),
        machine=machine_info(),
        outcome=outcome,
    )
