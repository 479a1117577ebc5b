"""`wattwise optimize`: measure candidates under a quality budget, choose the cheapest.

Every candidate is compressed into a variant directory, profiled the same way (same batch
size, same val split), ranked by its measured cost, never by operation counts or method
names. The chosen one is re-scored on the test split, which the search never used, before it
is declared within budget. The best variant so far is on disk at every moment (`best/`), and
`--resume` skips candidates already measured.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from wattwise.compress.pipeline import run_recipe
from wattwise.compress.variant import (
    copy_variant,
    load_variant,
    open_model,
    profile_overrides,
    save_variant,
)
from wattwise.errors import WattwiseError
from wattwise.measure.latency import QUICK_TIMING
from wattwise.measure.profile import Profile, profile_model
from wattwise.models.registry import LoadedModel, ModelOptions
from wattwise.paths import ensure_writable_dir
from wattwise.progress import info, progress_bar
from wattwise.search.budget import Budget, default_budget, parse_budget
from wattwise.search.defaults import default_space
from wattwise.search.machine import machine_info
from wattwise.search.objective import Objective, parse_objective
from wattwise.search.pareto import front_ids
from wattwise.search.ranking import rank
from wattwise.search.results import CandidateResult, OptimizeResult, SearchState
from wattwise.search.space import Candidate, SearchSpace, load_space_yaml


def _layer_count(loaded: LoadedModel) -> int | None:
    transformer = getattr(loaded.module, "transformer", None)
    layers = getattr(getattr(transformer, "encoder", None), "layer", None)
    return len(layers) if layers is not None else None


@dataclass(frozen=True)
class SearchSettings:
    """What one search is asked: the budget and objective, where and how long to search."""

    budget: Budget
    objective: Objective
    out: Path
    device: str = "cpu"
    seed: int = 0
    time_limit_s: float = 180.0
    region: str | None = None


class Search:
    """One optimize run; see the module docstring."""

    def __init__(
        self, loaded: LoadedModel, space: SearchSpace, state: SearchState, settings: SearchSettings
    ) -> None:
        self.loaded, self.space, self.state, self.settings = loaded, space, state, settings
        self.budget, self.objective, self.out = settings.budget, settings.objective, settings.out
        self.device, self.seed, self.region = settings.device, settings.seed, settings.region
        self.time_limit_s = settings.time_limit_s
        self.started = time.perf_counter()

    # -- measuring -------------------------------------------------------------------------
    def _profile(self, loaded: LoadedModel, split: str = "val") -> Profile:
        return profile_model(
            loaded,
            (self.objective.batch_size,),
            device=self.device,
            region=self.region,
            timing=QUICK_TIMING,
            quality_split=split,
            show_progress=False,
        )

    def _score(self, result: CandidateResult, profile: Profile) -> None:
        baseline = self.state.baseline
        result.profile = profile.to_dict()
        result.quality = dict(profile.quality)
        reference = baseline.quality if baseline else profile.quality
        result.budget_value = self.budget.value(reference, profile.quality)
        result.within_budget = self.budget.met(reference, profile.quality)
        result.cost = self.objective.cost(profile)
        result.objective_display = self.objective.display(profile)
        if baseline and baseline.profile:
            key = str(self.objective.batch_size)
            base_latency = baseline.profile["latency_ms"][key]["p50_ms"]
            result.speedup = base_latency / profile.latency_ms[key].p50_ms
            result.slower_than_original = result.speedup < 1.0
        result.status = "measured"

    def original(self) -> LoadedModel:
        """The original model, run through the task's reference copy when there is one (same
        weights; the task then reuses the reference outputs instead of computing them twice)."""
        reference = getattr(self.loaded.task, "reference", None)
        if isinstance(reference, nn.Module):
            return dataclasses.replace(self.loaded, module=reference)
        return self.loaded

    def measure_baseline(self) -> CandidateResult:
        """The original model, measured like every candidate."""
        if self.state.baseline is None:
            result = CandidateResult("original", "original", 0, "original (fp32, eager)", {})
            started = time.perf_counter()
            self._score(result, self._profile(self.original()))
            result.speedup, result.seconds = 1.0, time.perf_counter() - started
            self.state.baseline = result
            self.state.save(self.out)
        return self.state.baseline

    def measure(self, candidate: Candidate) -> CandidateResult:
        """Compress, save as a variant, profile: one candidate."""
        result = CandidateResult.of(candidate)
        started = time.perf_counter()
        directory = self.out / "candidates" / candidate.id
        try:
            recipe = candidate.recipe
            run = run_recipe(
                self.loaded,
                recipe,
                device=self.device,
                seed=self.seed,
                measure_steps=False,
                show_progress=False,
            )
            variant = save_variant(
                run,
                recipe,
                directory,
                batch_sizes=(self.objective.batch_size,),
                region=self.region,
                show_progress=False,
                timing=QUICK_TIMING,
                quality_split="val",
            )
            self._score(result, variant.profile)
            result.variant_dir = str(directory)
        except WattwiseError as error:
            result.status, result.reason = "failed", str(error)
        except Exception as error:  # noqa: BLE001 - one broken candidate must not end the search
            result.status, result.reason = "failed", f"{type(error).__name__}: {error}"[:300]
        result.seconds = time.perf_counter() - started
        return result

    # -- choosing ------------------------------------------------------------------------------
    def ranked(self) -> list[CandidateResult]:
        """Eligible candidates so far, best first (see `wattwise.search.ranking`)."""
        return rank(self.state.results, self.objective)

    def update_best(self) -> None:
        """Keep the best variant so far in `out/best/` (atomic copy)."""
        ranked = self.ranked()
        if not ranked:
            return
        best = ranked[0]
        marker = self.out / "best" / ".candidate"
        if marker.is_file() and marker.read_text() == best.id:
            return
        copy_variant(Path(best.variant_dir), self.out / "best", marker=best.id)

    def confirm(
        self,
    ) -> tuple[CandidateResult | None, dict[str, Any], Profile | None, Profile | None]:
        """Re-score the best candidates on the test split until one holds the budget there."""
        original = self.original()
        baseline_test = original.task.evaluate(original.module, "test")
        attempts = []
        for result in self.ranked():
            variant = load_variant(result.variant_dir)
            test_profile = profile_model(
                variant,
                (self.objective.batch_size,),
                device=self.device,
                region=self.region,
                quality_split="test",
                show_progress=False,
                overrides=profile_overrides(variant),
            )
            met = self.budget.met(baseline_test.metrics, test_profile.quality)
            attempts.append(
                {
                    "id": result.id,
                    "label": result.label,
                    "test_quality": test_profile.quality,
                    "budget_value": self.budget.value(baseline_test.metrics, test_profile.quality),
                    "met": met,
                }
            )
            if met:
                base_profile = profile_model(
                    self.loaded,
                    (self.objective.batch_size,),
                    device=self.device,
                    region=self.region,
                    quality_split="test",
                    show_progress=False,
                )
                return (
                    result,
                    {"baseline_test_quality": baseline_test.metrics, "attempts": attempts},
                    test_profile,
                    base_profile,
                )
        return (
            None,
            {"baseline_test_quality": baseline_test.metrics, "attempts": attempts},
            None,
            None,
        )

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> tuple[bool, str]:
        """Measure candidates in order until done, out of time or interrupted."""
        candidates = self.space.ordered()
        done = self.state.done_ids()
        broken_at: dict[str, int] = {}
        for previous in self.state.results:
            if previous.status == "measured" and not previous.within_budget and not previous.peer:
                broken_at[previous.family] = min(broken_at.get(previous.family, 99), previous.level)
        partial, reason = False, "all candidates measured"
        with progress_bar("optimize", total=len(candidates)) as bar:
            for index, candidate in enumerate(candidates, start=1):
                if candidate.id in done:
                    bar.advance("resumed: already measured")
                    continue
                elapsed = time.perf_counter() - self.started
                if elapsed > self.time_limit_s:
                    self._skip(candidate, f"time limit {self.time_limit_s:.0f}s reached")
                    partial, reason = (
                        True,
                        f"time limit reached after {index - 1} of {len(candidates)} candidates",
                    )
                    bar.advance("skipped: time limit")
                    continue
                expected = self.expected_seconds(candidate)
                if elapsed + expected > self.time_limit_s:
                    self._skip(
                        candidate,
                        f"expected to take ~{expected:.0f}s, more than the "
                        f"{self.time_limit_s - elapsed:.0f}s left",
                    )
                    bar.advance("skipped: not enough time left")
                    continue
                if not candidate.peer and broken_at.get(candidate.family, 99) < candidate.level:
                    self._skip(
                        candidate, "a milder setting of this family already broke the budget"
                    )
                    bar.advance("skipped: family stopped")
                    continue
                bar.update(f"candidate {index} of {len(candidates)}: {candidate.label}")
                result = self.measure(candidate)
                self.state.results.append(result)
                self.state.save(self.out)
                if result.status == "measured" and not result.within_budget and not candidate.peer:
                    broken_at[candidate.family] = min(
                        broken_at.get(candidate.family, 99), candidate.level
                    )
                self.update_best()
                best = self.ranked()
                bar.advance(
                    f"best so far: {best[0].label} ({best[0].objective_display})"
                    if best
                    else "best so far: none within budget"
                )
                info(f"[{index}/{len(candidates)}] {candidate.label}: {_one_line(result)}")
        return partial, reason

    def expected_seconds(self, candidate: Candidate) -> float:
        """Rough duration: the mean of candidates measured so far, plus training steps at
        three forward passes each (forward + backward ≈ 3x forward) of the original's measured
        batch latency. Used only to avoid starting what cannot finish in time."""
        finished = [r.seconds for r in self.state.results if r.status == "measured"]
        base = sum(finished) / len(finished) if finished else 5.0
        # Any step with a `steps` field trains (distill, finetune, QAT).
        steps = sum(int(getattr(step, "steps", 0) or 0) for step in candidate.recipe.steps)
        baseline = self.state.baseline
        batch_seconds = 0.0
        if baseline and baseline.profile:
            batch_seconds = (
                baseline.profile["latency_ms"][str(self.objective.batch_size)]["p50_ms"] / 1000
            )
        return base + steps * 3 * batch_seconds

    def _skip(self, candidate: Candidate, reason: str) -> None:
        self.state.results.append(CandidateResult.of(candidate, status="skipped", reason=reason))


def _one_line(result: CandidateResult) -> str:
    if result.status != "measured":
        return f"{result.status}: {result.reason}"
    verdict = "within budget" if result.within_budget else "breaks budget"
    speed = f", {result.speedup:.2f}x" if result.speedup else ""
    return f"{result.objective_display}{speed}, {verdict} ({result.budget_value:.4f})"


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
) -> OptimizeResult:
    """Search recipes × backends for the cheapest variant within the quality budget.

    Returns an `OptimizeResult`; the chosen variant is in `out/variant/`, the best so far in
    `out/best/`. The report is written by the caller (`wattwise.api.optimize` and the CLI do).
    Example:
        result = optimize("minilm", budget="fidelity>=0.99", objective="throughput")
    """
    started = time.perf_counter()
    objective_spec = parse_objective(objective, batch_size)
    out_dir = ensure_writable_dir(Path(out))
    loaded = open_model(model, options)
    budget_spec = parse_budget(budget, loaded.task) if budget else default_budget(loaded.task)
    machine = machine_info()
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
    }
    state = SearchState.load(out_dir, state_settings) if resume else SearchState(state_settings)
    settings = SearchSettings(
        budget=budget_spec,
        objective=objective_spec,
        out=out_dir,
        device=device,
        seed=seed,
        time_limit_s=time_limit_s,
        region=region,
    )
    search = Search(loaded, search_space, state, settings)
    partial, reason = False, ""
    chosen, confirmation, chosen_profile, baseline_profile = None, {}, None, None
    try:
        info(
            f"optimize {model}: budget {budget_spec.text()}, objective {objective_spec.name} "
            f"at batch {batch_size}, {len(search_space.ordered())} candidates, limit {time_limit_s:.0f}s"
        )
        baseline = search.measure_baseline()
        partial, reason = search.run()
        chosen, confirmation, chosen_profile, baseline_profile = search.confirm()
        if chosen:
            copy_variant(Path(chosen.variant_dir), out_dir / "variant", profile=chosen_profile)
    except KeyboardInterrupt:
        partial, reason = True, "interrupted (Ctrl-C): partial results"
        baseline = state.baseline or CandidateResult("original", "original", 0, "original", {})
    measured = [r for r in state.results if r.status == "measured"]
    members = ([baseline] if baseline.status == "measured" else []) + measured
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
        chosen=chosen,
        confirmation=confirmation,
        chosen_variant=str(out_dir / "variant") if chosen else "",
        partial=partial,
        stop_reason=reason,
        elapsed_s=time.perf_counter() - started,
        machine=machine,
        skipped_space=search_space.skipped,
        chosen_profile=chosen_profile.to_dict() if chosen_profile else None,
        baseline_profile=baseline_profile.to_dict() if baseline_profile else None,
    )
