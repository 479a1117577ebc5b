"""One optimize run's measuring loop: the original, then each candidate, all timed the same way.

Every candidate is compressed and saved as a variant, then timed in alternation with the
original (`search.timing`) within its slice of the time limit, abandoned early when it is far
slower than the best so far, and only then scored on the val split. Costs of speed objectives
are the original's measured cost divided by the paired ratio, so host drift between candidates
cancels. See `search.deadline` for what may start when.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from wattwise.compress.pipeline import run_recipe
from wattwise.compress.variant import record_profile, save_variant
from wattwise.errors import WattwiseError
from wattwise.measure.latency import TimingSettings
from wattwise.measure.profile import Profile, ProfileOverrides, profile_model
from wattwise.models.registry import LoadedModel
from wattwise.progress import info, progress_bar
from wattwise.search.budget import Budget
from wattwise.search.deadline import TRAIN_STEP_FORWARDS, Deadline, training_steps_that_fit
from wattwise.search.objective import Objective
from wattwise.search.ordering import export_path, libraries_of, trains
from wattwise.search.ranking import rank
from wattwise.search.results import CandidateResult, SearchState, one_line
from wattwise.search.space import Candidate
from wattwise.search.timing import PairedTiming, time_against_original
from wattwise.search.workload import make_workload
from wattwise.tasks.base import forward_on_its_device

# The profile a scored candidate gets (size, energy, quality): its speed comes from the paired
# timing, so a short window is enough here.
SCORE_TIMING = TimingSettings(1, 0.0, 3, 0.2, 50, 2.0)
# A peer's timing slice, as a share of a candidate's.
PEER_SLICE_SHARE = 0.5
# Compression seconds assumed per backend before one has been measured on this run.
FIRST_COMPRESS_GUESS_S = {"eager": 2.0, "onnxruntime": 10.0, "torch_compile": 20.0}


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
    workload: str = "fixed"


class Search:
    """Measures the original and the candidates; see the module docstring."""

    def __init__(
        self,
        loaded: LoadedModel,
        state: SearchState,
        settings: SearchSettings,
        deadline: Deadline,
    ) -> None:
        self.loaded, self.state, self.settings, self.deadline = loaded, state, settings, deadline
        self.budget, self.objective, self.out = settings.budget, settings.objective, settings.out
        self.inputs = loaded.task.example_inputs(self.objective.batch_size, "val")
        self.workload = make_workload(
            loaded.task, self.objective.batch_size, "val", settings.workload
        )
        self.eval_s = 0.0  # seconds one val-split quality evaluation of the original took
        self.compress_s: dict[str, float] = {}

    # -- the original ------------------------------------------------------------------------
    def original(self) -> LoadedModel:
        """The original model, run through the task's reference copy when there is one (same
        weights; the task then reuses the reference outputs instead of computing them twice)."""
        reference = getattr(self.loaded.task, "reference", None)
        if isinstance(reference, nn.Module):
            return dataclasses.replace(self.loaded, module=reference)
        return self.loaded

    def profile(
        self, loaded: LoadedModel, split: str, overrides: ProfileOverrides | None = None
    ) -> Profile:
        """Size, energy and quality of `loaded` at the user's batch size (short timing)."""
        return profile_model(
            loaded,
            (self.objective.batch_size,),
            device=self.settings.device,
            region=self.settings.region,
            timing=SCORE_TIMING,
            quality_split=split,
            show_progress=False,
            overrides=overrides,
        )

    def measure_baseline(self) -> CandidateResult:
        """The original model: its profile and val quality, the reference of every ratio."""
        started = time.perf_counter()
        if self.state.baseline is None:
            result = CandidateResult("original", "original", 0, "original (fp32, eager)", {})
            self._score(result, self.profile(self.original(), "val"), None)
            result.speedup = 1.0
            result.seconds = time.perf_counter() - started
            if self.workload.name == "corpus":
                seconds = self.workload.full_pass_s(self.original().module)
                result.cost = 1000.0 * seconds / self.workload.samples
                result.objective_display = (
                    f"{self.workload.samples / seconds:,.1f} texts/s, "
                    f"{self.workload.tokens / seconds:,.0f} tokens/s (corpus)"
                )
            self.state.baseline = result
            self.state.save(self.out)
        self.eval_s = max(self.state.baseline.seconds, time.perf_counter() - started)
        return self.state.baseline

    def original_scored_on(self, split: str) -> Profile:
        """The original's search profile with quality re-scored on `split`: its speed, size and
        energy were measured on inputs of the same shapes, so only quality depends on the split
        (one scoring pass instead of a second full profile)."""
        profile = Profile.from_dict(self.state.baseline.profile)
        quality = self.loaded.task.evaluate(forward_on_its_device(self.original().module), split)
        return dataclasses.replace(
            profile,
            quality=dict(quality.metrics),
            quality_ci95=dict(quality.ci95),
            quality_split=quality.split,
            quality_samples=quality.samples,
        )

    def batch_s(self) -> float:
        """The original's seconds per batch at the user's batch size."""
        key = str(self.objective.batch_size)
        return self.state.baseline.profile["latency_ms"][key]["p50_ms"] / 1000

    # -- one candidate -----------------------------------------------------------------------
    def slice_for(self, candidate: Candidate) -> float:
        """A candidate's timing slice; a peer's is half: it is a reference point, measured after
        the likeliest winners, and must not crowd them out."""
        whole = self.deadline.slice_s()
        return max(0.5, whole * PEER_SLICE_SHARE) if candidate.peer else whole

    def expected_seconds(self, candidate: Candidate, prior: float) -> float:
        """Compression (as measured for its backend so far) + per-layer sensitivity passes +
        training steps + its timing slice + scoring on val at its predicted speed."""
        backend = candidate.recipe.backend.name
        compress = self.compress_s.get(
            export_path(candidate), FIRST_COMPRESS_GUESS_S.get(backend, 10.0)
        )
        steps = sum(int(getattr(step, "steps", 0) or 0) for step in candidate.recipe.steps)
        training = steps * TRAIN_STEP_FORWARDS * self.batch_s()
        return (
            compress
            + self.sensitivity_seconds(candidate)
            + training
            + self.slice_for(candidate)
            + self.eval_s / max(prior, 0.05)
        )

    def sensitivity_seconds(self, candidate: Candidate) -> float:
        """Selective int8 measures each Linear layer alone on its calibration samples: one
        forward of them per layer (measured ~116 s for MiniLM's 36 layers on a 2-core AVX2 CPU,
        which a flat compression guess missed by 10x)."""
        seconds = 0.0
        for step in candidate.recipe.steps:
            if getattr(step, "method", "") == "int8_selective":
                batches = max(1.0, step.calibration_samples / self.objective.batch_size)
                seconds += (self.linear_layers + 2) * batches * self.batch_s()
        return seconds

    @functools.cached_property
    def linear_layers(self) -> int:
        """Linear layers in the model (what per-layer sensitivity walks)."""
        return sum(isinstance(m, nn.Linear) for m in self.loaded.module.modules())

    def fit_training(self, candidate: Candidate, prior: float) -> tuple[Candidate, str] | None:
        """The candidate with its training steps cut to the time left (None: too few fit)."""
        trainers = [s for s in candidate.recipe.steps if getattr(s, "steps", None)]
        if not trainers:
            return candidate, ""
        requested = sum(int(s.steps) for s in trainers)
        others = self.expected_seconds(candidate, prior) - (
            requested * TRAIN_STEP_FORWARDS * self.batch_s()
        )
        allowed = training_steps_that_fit(
            requested, self.deadline.left_for_candidates() - others, self.batch_s()
        )
        if allowed is None:
            return None
        if allowed == requested:
            return candidate, ""
        scale = allowed / requested
        steps = [
            s.model_copy(update={"steps": max(1, int(s.steps * scale))})
            if getattr(s, "steps", None)
            else s
            for s in candidate.recipe.steps
        ]
        recipe = dataclasses.replace(candidate.recipe, steps=steps)
        note = f"training cut from {requested} to {allowed} steps to fit the time left"
        return dataclasses.replace(candidate, recipe=recipe), note

    def best_ratio(self) -> float:
        """The best paired ratio among candidates within budget so far (the original: 1.0)."""
        ratios = [1.0] + [
            r.speedup for r in self.state.results if r.within_budget and r.speedup is not None
        ]
        return max(ratios)

    def measure(self, candidate: Candidate, prior: float, note: str = "") -> CandidateResult:
        """Compress and save, time against the original (abandon early if far slower), score."""
        result = CandidateResult.of(
            candidate, prior=prior, libraries=libraries_of(candidate.recipe)
        )
        result.note = "; ".join(n for n in (candidate.note, note) if n)
        started = time.perf_counter()
        directory = self.out / "candidates" / candidate.id
        try:
            run = run_recipe(
                self.loaded,
                candidate.recipe,
                device=self.settings.device,
                seed=self.settings.seed,
                measure_steps=False,
                show_progress=False,
            )
            variant = save_variant(
                run, candidate.recipe, directory, show_progress=False, profile=False
            )
            if not trains(candidate):
                # Learnt from candidates without training: their time is all compression.
                path = export_path(candidate)
                seconds = time.perf_counter() - started
                self.compress_s[path] = max(self.compress_s.get(path, 0.0), seconds)
            module, original = variant.module, self.original().module
            speed_matters = self.objective.depends_on_speed
            timing = time_against_original(
                self.workload.runner(module),
                self.workload.runner(original),
                slice_s=self.slice_for(candidate),
                precision=self.objective.timing_precision,
                abandon_below=0.5 * self.best_ratio() if speed_matters else None,
                original_warm_s=self.batch_s() if self.workload.name == "fixed" else None,
            )
            result.paired, result.speedup = timing.to_dict(), timing.ratio
            result.variant_dir = str(directory)
            if timing.status != "measured":
                result.status, result.reason = "abandoned", timing.reason
            else:
                exported = LoadedModel(str(directory), module, self.loaded.task, "variant")
                overrides = ProfileOverrides.from_dict(variant.manifest["profile_overrides"])
                profile = self.profile(exported, "val", overrides)
                record_profile(directory, profile)
                self._score(result, profile, timing)
        except WattwiseError as error:
            result.status, result.reason = "failed", str(error)
        except Exception as error:  # noqa: BLE001 - one broken candidate must not end the search
            result.status, result.reason = "failed", f"{type(error).__name__}: {error}"[:300]
        result.seconds = time.perf_counter() - started
        return result

    def _score(self, result: CandidateResult, profile: Profile, timing: PairedTiming | None):
        baseline = self.state.baseline
        result.profile = profile.to_dict()
        result.quality = dict(profile.quality)
        reference = baseline.quality if baseline else profile.quality
        result.budget_value = self.budget.value(reference, profile.quality)
        result.within_budget = self.budget.met(reference, profile.quality)
        result.cost = self.objective.cost(profile)
        result.objective_display = self.objective.display(profile)
        if timing is not None and baseline is not None and self.objective.is_speed:
            # The original's cost, scaled by a ratio timed in alternation with it.
            result.cost = baseline.cost / timing.ratio
            if self.workload.name == "corpus":
                rate = 1000.0 / baseline.cost * timing.ratio
                result.objective_display = f"{rate:,.1f} texts/s (corpus)"
            else:
                result.objective_display = self.objective.display_scaled(
                    baseline.profile, timing.ratio
                )
        if timing is not None:
            result.slower_than_original = timing.ratio < 1.0
        result.status = "measured"

    # -- the loop ----------------------------------------------------------------------------
    def ranked(self) -> list[CandidateResult]:
        """Eligible candidates so far, best first, the original among them (see ranking)."""
        return rank([self.state.baseline, *self.state.results], self.objective)

    def run(self, order: list[tuple[Candidate, float]], on_result) -> tuple[bool, str]:
        """Measure candidates in order until done or out of time; `on_result` after each."""
        done = self.state.done_ids()
        broken_at: dict[str, int] = {}
        for previous in self.state.results:
            if previous.status == "measured" and not previous.within_budget and not previous.peer:
                broken_at[previous.family] = min(broken_at.get(previous.family, 99), previous.level)
        partial, reason = False, "all candidates measured"
        total = len(order)
        with progress_bar("optimize", total=total) as bar:
            for index, (candidate, prior) in enumerate(order, start=1):
                if candidate.id in done:
                    bar.advance("resumed: already measured")
                    continue
                peers_after = [(c, p) for c, p in order[index:] if c.peer and c.id not in done]
                skip = self._why_not_start(candidate, prior, broken_at, peers_after)
                fitted = None if skip else self.fit_training(candidate, prior)
                if skip is None and fitted is None:
                    skip = "not started: too few training steps fit in the time left"
                if skip:
                    self.skip(candidate, prior, skip)
                    if "time" in skip:
                        partial = True
                        reason = f"time limit: {index - 1} of {total} candidates started"
                    bar.advance(f"skipped: {candidate.label}")
                    continue
                candidate, note = fitted
                bar.update(f"candidate {index} of {total}: {candidate.label}")
                result = self.measure(candidate, prior, note)
                self.state.results.append(result)
                self.state.save(self.out)
                if result.status == "measured" and not result.within_budget and not candidate.peer:
                    broken_at[candidate.family] = min(
                        broken_at.get(candidate.family, 99), candidate.level
                    )
                on_result(self.ranked())
                bar.advance(f"{candidate.label}: {one_line(result)}")
                info(f"[{index}/{total}] {candidate.label}: {one_line(result)}")
        return partial, reason

    def _why_not_start(
        self,
        candidate: Candidate,
        prior: float,
        broken_at: dict[str, int],
        peers_after: list[tuple[Candidate, float]] = (),
    ) -> str | None:
        if not candidate.peer and broken_at.get(candidate.family, 99) < candidate.level:
            return "a milder setting of this family already broke the budget"
        left = self.deadline.left_for_candidates()
        if left <= 0:
            return f"time limit {self.deadline.limit_s:.0f} s reached"
        one_batch = self.batch_s() / max(prior, 1e-3)
        if not self._one_batch_fits(candidate, prior):
            return (
                f"not started: the probe predicts {prior:.2f}x, so one batch would take "
                f"~{one_batch:.0f} s, over its {self.slice_for(candidate):.0f} s timing slice"
            )
        # After the first measured candidate, the peers still to come keep their time: the
        # report must show them beside the winners (unless even the first did not fit).
        measured = any(r.status == "measured" for r in self.state.results)
        if not candidate.peer and measured:
            left -= sum(
                self.expected_seconds(peer, p)
                for peer, p in peers_after
                if self._one_batch_fits(peer, p)
            )
        expected = self.expected_seconds(candidate, prior)
        if not trains(candidate) and expected > left:
            kept = (
                " (after the peers' share)"
                if not candidate.peer and measured and peers_after
                else ""
            )
            return (
                f"expected to take ~{expected:.0f} s, more than the {max(left, 0):.0f} s of time "
                f"left{kept}"
            )
        return None

    def _one_batch_fits(self, candidate: Candidate, prior: float) -> bool:
        """Whether one batch at the probe's predicted speed fits in the candidate's slice."""
        return self.batch_s() / max(prior, 1e-3) <= self.slice_for(candidate)

    def skip(self, candidate: Candidate, prior: float, reason: str) -> None:
        """Record a candidate that was not started, and why."""
        self.state.results.append(
            CandidateResult.of(
                candidate,
                status="skipped",
                reason=reason,
                prior=prior,
                libraries=libraries_of(candidate.recipe),
            )
        )
