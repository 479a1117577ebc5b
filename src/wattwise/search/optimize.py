"""`wattwise optimize`: measure candidates under a quality budget, choose the cheapest.

Every candidate is compressed into a variant directory, profiled the same way (same batch
size, same val split), ranked by its measured cost, never by operation counts or method
names. The chosen one is re-scored on the test split, which the search never used, before it
is declared within budget. The best variant so far is on disk at every moment (`best/`), and
`--resume` skips candidates already measured.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from wattwise.compress.pipeline import run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import load_variant, read_manifest, save_variant
from wattwise.errors import NoCandidateWithinBudgetError, WattwiseError
from wattwise.measure.latency import QUICK_TIMING
from wattwise.measure.profile import Profile, profile_model
from wattwise.models.registry import LoadedModel, ModelOptions, load_model
from wattwise.paths import atomic_directory, ensure_writable_dir
from wattwise.progress import info, progress_bar
from wattwise.search.budget import Budget, default_budget, parse_budget
from wattwise.search.defaults import default_space
from wattwise.search.machine import MachineInfo, machine_info
from wattwise.search.objective import Objective, parse_objective
from wattwise.search.pareto import pareto_front
from wattwise.search.results import CandidateResult, SearchState
from wattwise.search.space import Candidate, SearchSpace, load_space_yaml

# Costs within this fraction of the best are ties, broken by candidate order (milder, earlier
# first), so timing noise does not flip the choice between two equally fast variants.
TIE_BAND = 0.03


@dataclass
class OptimizeResult:
    """Everything a search found; the report is written from this."""

    model: str
    budget: str
    objective: str
    batch_size: int
    device: str
    seed: int
    time_limit_s: float
    baseline: CandidateResult
    candidates: list[CandidateResult]
    front: list[str]
    chosen: CandidateResult | None
    confirmation: dict[str, Any]
    chosen_variant: str
    partial: bool
    stop_reason: str
    elapsed_s: float
    machine: MachineInfo
    budget_spec: Budget
    skipped_space: list[str] = field(default_factory=list)
    chosen_profile: dict[str, Any] | None = None
    baseline_profile: dict[str, Any] | None = None
    report_dir: str = ""

    @property
    def exit_code(self) -> int:
        """0 when a variant was chosen, 3 when none met the budget."""
        return 0 if self.chosen else NoCandidateWithinBudgetError.exit_code


def _layer_count(loaded: LoadedModel) -> int | None:
    transformer = getattr(loaded.module, "transformer", None)
    layers = getattr(getattr(transformer, "encoder", None), "layer", None)
    return len(layers) if layers is not None else None


class Search:
    """One optimize run; see the module docstring."""

    def __init__(
        self,
        loaded: LoadedModel,
        budget: Budget,
        objective: Objective,
        space: SearchSpace,
        out: Path,
        device: str,
        seed: int,
        time_limit_s: float,
        state: SearchState,
        region: str | None,
    ) -> None:
        self.loaded, self.budget, self.objective, self.space = loaded, budget, objective, space
        self.out, self.device, self.seed = out, device, seed
        self.time_limit_s, self.state, self.region = time_limit_s, state, region
        self.started = time.perf_counter()

    # -- measuring -------------------------------------------------------------------------
    def _profile(self, loaded: LoadedModel, split: str = "val") -> Profile:
        return profile_model(
            loaded,
            (self.objective.batch_size,),
            self.device,
            self.region,
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
            recipe = Recipe.from_dict(candidate.recipe)
            run = run_recipe(
                self.loaded,
                recipe,
                self.device,
                self.seed,
                measure_steps=False,
                show_progress=False,
            )
            variant = save_variant(
                run,
                recipe,
                directory,
                (self.objective.batch_size,),
                self.region,
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
    def eligible(self, result: CandidateResult) -> bool:
        """Within budget on val, and not slower than the original for a speed objective."""
        if result.status != "measured" or not result.within_budget:
            return False
        return not (self.objective.is_speed and result.slower_than_original)

    def ranked(self) -> list[CandidateResult]:
        """Eligible candidates by cost, ties (within TIE_BAND) broken by search order."""
        order = {r.id: i for i, r in enumerate(self.state.results)}
        eligible = [r for r in self.state.results if self.eligible(r)]
        if not eligible:
            return []
        eligible.sort(key=lambda r: r.cost)
        ranked: list[CandidateResult] = []
        while eligible:
            floor = eligible[0].cost
            band = [r for r in eligible if r.cost <= floor * (1 + TIE_BAND)]
            band.sort(key=lambda r: order[r.id])
            ranked.append(band[0])
            eligible.remove(band[0])
        return ranked

    def update_best(self) -> None:
        """Keep the best variant so far in `out/best/` (atomic copy)."""
        ranked = self.ranked()
        if not ranked:
            return
        best = ranked[0]
        marker = self.out / "best" / ".candidate"
        if marker.is_file() and marker.read_text() == best.id:
            return
        with atomic_directory(self.out / "best") as staging:
            shutil.copytree(best.variant_dir, staging, dirs_exist_ok=True)
            (staging / ".candidate").write_text(best.id)

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
                self.device,
                self.region,
                quality_split="test",
                show_progress=False,
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
                    self.device,
                    self.region,
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
        steps = sum(
            int(fields.get("steps", 0))
            for entry in candidate.recipe.get("steps", [])
            for fields in entry.values()
            if isinstance(fields, dict)
        )
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
    batch_size: int = 32,
    device: str = "cpu",
    space: str | None = None,
    time_limit_s: float = 180.0,
    out: str | Path = "report",
    resume: bool = False,
    seed: int = 0,
    region: str | None = None,
    options: ModelOptions | None = None,
    write_report: bool = True,
) -> OptimizeResult:
    """Search recipes × backends for the cheapest variant within the quality budget.

    Returns an `OptimizeResult`; the report (index.html, report.json, report.md) and the chosen
    variant (`out/variant/`) are written to `out`. Example:
        wattwise.optimize("minilm", budget="fidelity>=0.99", objective="throughput")
    """
    import wattwise.compress  # noqa: F401  (registers steps and backends)
    from wattwise.report.write import write_report as write_all

    started = time.perf_counter()
    objective_spec = parse_objective(objective, batch_size)
    out_dir = ensure_writable_dir(Path(out))
    loaded = load_model(model, options)
    budget_spec = parse_budget(budget, loaded.task) if budget else default_budget(loaded.task)
    machine = machine_info()
    if space:
        search_space = load_space_yaml(space)
    else:
        search_space = default_space(loaded.task.output_kind, device, machine, _layer_count(loaded))
    settings = {
        "model": model,
        "budget": budget_spec.text(),
        "objective": objective_spec.name,
        "batch_size": batch_size,
        "device": device,
        "seed": seed,
        "space": space or "default",
    }
    state = SearchState.load(out_dir, settings) if resume else SearchState(settings)
    search = Search(
        loaded,
        budget_spec,
        objective_spec,
        search_space,
        out_dir,
        device,
        seed,
        time_limit_s,
        state,
        region,
    )
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
            with atomic_directory(out_dir / "variant") as staging:
                shutil.copytree(chosen.variant_dir, staging, dirs_exist_ok=True)
                _store_confirmed_profile(staging, chosen_profile)
    except KeyboardInterrupt:
        partial, reason = True, "interrupted (Ctrl-C): partial results"
        baseline = state.baseline or CandidateResult("original", "original", 0, "original", {})
    measured = [r for r in state.results if r.status == "measured"]
    members = ([baseline] if baseline.status == "measured" else []) + measured
    points = [(_quality_axis(budget_spec, r), r.cost) for r in members]
    front = [members[i].id for i in pareto_front(points)]
    result = OptimizeResult(
        model,
        budget_spec.text(),
        objective_spec.name,
        batch_size,
        device,
        seed,
        time_limit_s,
        baseline,
        list(state.results),
        front,
        chosen,
        confirmation,
        str(out_dir / "variant") if chosen else "",
        partial,
        reason,
        time.perf_counter() - started,
        machine,
        budget_spec,
        search_space.skipped,
        chosen_profile.to_dict() if chosen_profile else None,
        baseline_profile.to_dict() if baseline_profile else None,
    )
    if write_report:
        result.report_dir = str(write_all(result, out_dir))
    return result


def _quality_axis(budget: Budget, result: CandidateResult) -> float:
    """Quality for the Pareto front: higher is better (a drop is negated)."""
    if budget.relative:
        return -(result.budget_value or 0.0)
    value = result.quality.get(budget.metric, 0.0)
    return value if budget.higher_is_better else -value


def _store_confirmed_profile(directory: Path, profile: Profile) -> None:
    """Put the test-split profile of the chosen variant into its manifest (manifest only;
    hashed files are unchanged)."""
    import json

    manifest = read_manifest(directory)
    manifest["profile"] = profile.to_dict()
    manifest["chosen_by"] = "wattwise optimize (quality confirmed on the held-out test split)"
    (directory / "variant.json").write_text(json.dumps(manifest, indent=2, default=str))
