"""`optimize MODEL --objective tokens_per_s`: the fastest way to generate with a causal LM.

Candidates are the target decoding with compiled steps (`generate --compile`: transformers'
static KV cache + torch.compile; same tokens, no variant to save), a lookup draft (the target's
next tokens as n-gram tables + prompt lookup, `compress.lookup_draft`), speculative-decoding drafts
made from the target (`compress.draft`: keep K of its L layers for K = 1..L-1, distil, with
and without int8) and the target itself in int8 (which changes its output, so it must hold the
quality budget). Distillation cannot be
interrupted, so its steps come from the time left: each layer count gets an equal share of
what remains once every remaining candidate's timing is set aside; int8 drafts quantize a copy
of the distilled draft of the same layer count instead of distilling again.

Each candidate is measured end to end: greedy generation at batch 1 of `NEW_TOKENS` tokens (fewer when the limit is short) from
held-out (val) prompts, timed in alternation with the target alone (`search.timing`), every
output compared token for token with the target's (`search.decode_runs`): a draft that changes
greedy output is a bug and the candidate fails. The fastest that holds is re-timed on the
test prompts, after loading it back from disk; when none beats the target alone the run says
so and exits 0. The whole run keeps `--time-limit` (+10%), like every optimize run; its entry
is `search.optimize_drafts.search_drafts`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from wattwise.compress.context import CompressionRun
from wattwise.compress.draft import DISTILL_BATCH, draft_int8_step, draft_recipe
from wattwise.compress.lookup_draft import build_lookup_draft
from wattwise.compress.pipeline import continue_run, run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.compress.steps.layers import find_layer_list
from wattwise.compress.variant import save_variant
from wattwise.errors import WattwiseError
from wattwise.models.generation import greedy_generate
from wattwise.models.lookup_draft import LookupDraft, load_lookup_draft
from wattwise.models.registry import LoadedModel
from wattwise.progress import info
from wattwise.search.budget import Budget
from wattwise.search.deadline import TRAIN_STEP_FORWARDS, Deadline
from wattwise.search.decode_runs import DecodeRunner, OutputChanged, reference_run
from wattwise.search.draft_calls import (
    COMPILE_GUESS_S,
    COMPILED_LABEL,
    FIRST_SAVE_GUESS_S,
    LOOKUP_BUILD_S,
    LOOKUP_BUILD_SHARE,
    LOOKUP_LABEL,
    MAX_DISTILL_STEPS,
    MIN_DISTILL_STEPS,
    MIN_NEW_TOKENS,
    NEW_TOKENS,
    PROMPT_TOKENS,
    PROMPTS,
    libraries_needed,
    new_tokens_that_fit,
    time_decoding,
)
from wattwise.search.objective import Objective
from wattwise.search.results import CandidateResult, one_line
from wattwise.search.space import Candidate, make_candidate
from wattwise.search.timing import PairedTiming
from wattwise.tasks.base import forward_on_its_device


@dataclass
class DraftSearch:
    """One draft search's state; see the module docstring."""

    loaded: LoadedModel
    budget: Budget
    objective: Objective
    out: Path
    deadline: Deadline
    seed: int = 0
    decode: Callable = greedy_generate
    results: list[CandidateResult] = field(default_factory=list)
    baseline: CandidateResult | None = None
    reference: list[torch.Tensor] = field(default_factory=list)
    eval_s: float = 0.0
    batch_s: float = 0.0
    save_s: float = FIRST_SAVE_GUESS_S
    new_tokens: int = NEW_TOKENS

    @property
    def target(self) -> torch.nn.Module:
        """The target `CausalLM`."""
        return self.loaded.module

    @property
    def layers(self) -> int:
        """The target's transformer layers."""
        return len(find_layer_list(self.target)[1])

    def prompts(self, split: str) -> list[torch.Tensor]:
        """Held-out prompts (block starts of the split's text)."""
        tokens = min(PROMPT_TOKENS, max(1, self.loaded.task.block_tokens // 2))
        return self.loaded.task.prompts(PROMPTS, tokens, split)

    def call_s(self) -> float:
        """Seconds one call of the target alone takes (`new_tokens` tokens)."""
        return self.new_tokens / self.baseline.generation["tokens_per_s"]

    def measure_s(self, role: str) -> float:
        """Expected seconds to save, time and check one candidate (and score an int8 target)."""
        seconds = self.save_s + self.deadline.slice_s() + PROMPTS * self.call_s()
        return seconds + (self.eval_s if role == "target" else 0.0)

    # -- the target alone ---------------------------------------------------------------------
    def measure_baseline(self) -> CandidateResult:
        """The target alone: reference tokens on the val prompts, tokens/s, val quality, and
        the time of one distillation batch's forward (to plan distillation)."""
        started = time.perf_counter()
        prompts = self.prompts("val")
        # Warm-up (the first call pays one-off costs), then a first speed to size the calls by.
        self.decode(self.target, prompts[0], 2, stop_at_eos=False)
        _, first = self.decode(self.target, prompts[0], MIN_NEW_TOKENS, stop_at_eos=False)
        self.new_tokens = new_tokens_that_fit(first.tokens_per_s, self.deadline.limit_s)
        self.reference, tokens_per_s = reference_run(
            self.target, prompts, self.new_tokens, self.decode
        )
        evaluated = time.perf_counter()
        quality = self.loaded.task.evaluate(forward_on_its_device(self.target), "val").metrics
        self.eval_s = time.perf_counter() - evaluated
        batch = self.loaded.task.example_inputs(DISTILL_BATCH, "val")
        with torch.inference_mode():
            forward_started = time.perf_counter()
            self.target(*batch)
            self.batch_s = time.perf_counter() - forward_started
        self.baseline = CandidateResult(
            "original", "original", 0, "target alone (no draft)", {},
            status="measured", quality=dict(quality), within_budget=True,
            budget_value=0.0, cost=1000.0 / tokens_per_s,
            objective_display=f"{tokens_per_s:,.1f} tokens/s", speedup=1.0,
            libraries=["transformers"], seconds=time.perf_counter() - started,
            generation={"role": "original", "tokens_per_s": tokens_per_s,
                        "identical_to_target": True, "prompts_checked": PROMPTS},
        )  # fmt: skip
        return self.baseline

    # -- planning -------------------------------------------------------------------------------
    def distill_steps(self, keep: int, levels_left: int, target_int8_left: bool) -> int:
        """Distillation steps for a draft of `keep` layers: an equal share, among the layer
        counts whose timing still fits, of the time left after every remaining timing."""
        left = self.deadline.left_for_candidates()
        left -= self.measure_s("target") if target_int8_left else 0.0
        per_level = 2 * self.measure_s("draft")
        fitting = max(1, min(levels_left, int(left // max(per_level, 1e-3))))
        share = (left - fitting * per_level) / fitting
        steps = min(MAX_DISTILL_STEPS, int(share / max(self.distill_step_s(keep), 1e-6)))
        return steps if steps >= MIN_DISTILL_STEPS else 0

    def distill_step_s(self, keep: int) -> float:
        """Seconds of one distillation step for a draft of `keep` layers: the teacher's forward
        plus the draft's forward and backward (≈ 3 forwards of keep/L of the target) on a
        batch of DISTILL_BATCH blocks."""
        return self.batch_s * (1 + TRAIN_STEP_FORWARDS * keep / self.layers)

    def fits(self, seconds: float) -> bool:
        """Whether `seconds` of work fits in the time left for candidates."""
        return seconds <= self.deadline.left_for_candidates()

    # -- candidates -----------------------------------------------------------------------------
    def run(self) -> tuple[bool, str]:
        """Measure compiled decoding first (cheap), then a lookup draft (seconds to build),
        then the draft networks by layer count (fewest first), the int8 target after the
        first of them."""
        keeps = list(range(1, self.layers))
        # "compiled": the target with compiled decode steps; "lookup": a lookup draft (n-gram
        # tables, seconds to build); None: the int8 target.
        plan: list[int | str | None] = ["compiled", "lookup", *keeps[:1], None, *keeps[1:]]
        partial, reason = False, "all candidates measured"
        for position, keep in enumerate(plan):
            if keep == "compiled":
                started = self._compiled_target()
            elif keep == "lookup":
                started = self._lookup_draft()
            elif keep is None:
                started = self._target_int8()
            else:
                levels_left = sum(1 for k in plan[position:] if isinstance(k, int))
                started = self._draft_level(keep, levels_left, None in plan[position:])
            if not started and not partial:
                partial, reason = (
                    True,
                    f"time limit: {position} of {len(plan)} candidate groups started",
                )
        return partial, reason

    def _draft_level(self, keep: int, levels_left: int, target_int8_left: bool) -> bool:
        steps = self.distill_steps(keep, levels_left, target_int8_left)
        fp32 = make_candidate(f"draft-keep-{keep}", 0, draft_recipe(keep, steps, int8=False))
        int8 = make_candidate(f"draft-keep-{keep}", 1, draft_recipe(keep, steps, int8=True))
        if not self.fits(steps * self.distill_step_s(keep) + self.measure_s("draft")):
            for candidate in (fp32, int8):
                self._skip(candidate, "draft")
            return False
        note = "" if steps else "not distilled: too little time left for distillation"
        run, shared_s = self._measure(fp32, lambda: self._run(fp32), 0.0, "draft", note)
        if run is None:
            self._skip(int8, "draft", "not started: the fp32 draft it quantizes failed to build")
        elif not self.fits(self.measure_s("draft")):
            self._skip(int8, "draft")
        else:
            note = "; ".join(n for n in (note, "distillation shared with the fp32 draft") if n)
            int8_step = Recipe.from_dict({"steps": [draft_int8_step()]})
            self._measure(int8, lambda: continue_run(run, int8_step), shared_s, "draft", note)
        return True

    def _compiled_target(self) -> bool:
        candidate = make_candidate("target-compiled", 0, {"steps": []})
        if not self.fits(COMPILE_GUESS_S + self.measure_s("compiled")):
            self._skip(candidate, "compiled")
            return False
        self._measure(candidate, None, 0.0, "compiled", "")
        return True

    def _lookup_draft(self) -> bool:
        candidate = replace(
            make_candidate("lookup-draft", 0, {"steps": []}), id="lookup-draft", label=LOOKUP_LABEL
        )
        build_s = min(LOOKUP_BUILD_S, LOOKUP_BUILD_SHARE * self.deadline.limit_s)
        if not self.fits(build_s + self.measure_s("draft")):
            self._skip(candidate, "draft")
            return False
        build = functools.partial(build_lookup_draft, self.loaded, seconds=build_s)
        self._measure(candidate, build, 0.0, "draft", "")
        return True

    def _target_int8(self) -> bool:
        candidate = make_candidate("target-int8", 0, {"steps": [draft_int8_step()]})
        if not self.fits(self.measure_s("target")):
            self._skip(candidate, "target")
            return False
        self._measure(candidate, lambda: self._run(candidate), 0.0, "target", "")
        return True

    def _run(self, candidate: Candidate) -> CompressionRun:
        return run_recipe(self.loaded, candidate.recipe, seed=self.seed, measure_steps=False,
                          show_progress=False)  # fmt: skip

    def _skip(self, candidate: Candidate, role: str, reason: str = "") -> None:
        result = CandidateResult.of(
            candidate, status="skipped", libraries=libraries_needed(candidate)
        )
        result.reason = reason or "not started: the time limit is reached"
        result.generation, result.label = {"role": role}, _label(candidate, role)
        self.results.append(result)

    def _measure(
        self, candidate: Candidate, build: Callable[[], CompressionRun] | None,
        earlier_s: float, role: str, note: str,
    ) -> tuple[CompressionRun | None, float]:  # fmt: skip
        """Build (`earlier_s`: seconds of a shared prefix already spent), save, time against
        the target alone (abandoned when far slower than the best so far), check every
        prompt's output, score; returns the run (None when the build failed) and its compress
        seconds. `build=None`: the target itself decoding compiled, nothing to build or save;
        its compile time counts as the compress seconds. One broken candidate never ends the
        search."""
        result = CandidateResult.of(candidate, libraries=libraries_needed(candidate))
        result.note, result.label = note, _label(candidate, role)
        steps = [getattr(s, "steps", None) for s in candidate.recipe.steps if s.kind == "distill"]
        result.generation = {"role": role, "distill_steps": steps[0] if steps else 0}
        directory = self.out / "candidates" / candidate.id
        started = time.perf_counter()
        run, runner, compress_s = None, None, earlier_s
        try:
            if build is None:
                module = self.target
                runner = self._runner(module, role, self.prompts("val"), self.reference)
                runner.run_prompt(0)  # compiles the decode step
                compress_s = earlier_s + time.perf_counter() - started
            else:
                run = build()
                compress_s = earlier_s + time.perf_counter() - started
                saving = time.perf_counter()
                module = self._save(run, candidate, directory)
                self.save_s = time.perf_counter() - saving
                result.variant_dir = str(directory)
                runner = self._runner(module, role, self.prompts("val"), self.reference)
            result.generation["compress_s"] = compress_s
            best = max([1.0] + [r.speedup for r in self.results if r.within_budget and r.speedup])
            timing = time_decoding(runner, self._alone(self.prompts("val")), self.deadline.slice_s(),
                           abandon_below=0.5 * best)  # fmt: skip
            result.paired, result.speedup = timing.to_dict(), timing.ratio
            if timing.status == "measured":
                runner.check_remaining()
                self._score(result, module, role, timing)
            else:
                result.status, result.reason = "abandoned", timing.reason
        except OutputChanged as changed:
            result.status = "failed"
            what = "compiled decoding" if role == "compiled" else "a draft (its verification)"
            result.reason = (
                f"greedy output differs from the target's ({changed}): {what} must never "
                "change greedy output; not chosen"
            )
        except WattwiseError as error:
            result.status, result.reason = "failed", str(error)
        except Exception as error:  # noqa: BLE001 - one broken candidate must not end the search
            result.status, result.reason = "failed", f"{type(error).__name__}: {error}"[:300]
        if runner is not None:
            result.generation.update(
                acceptance_rate=runner.acceptance_rate,
                identical_to_target=runner.identical,
                prompts_checked=len(runner.checked),
            )
        result.seconds = earlier_s + time.perf_counter() - started
        self.results.append(result)
        info(f"{result.label}: {one_line(result)}")
        return run, compress_s

    def _save(self, built, candidate: Candidate, directory: Path):
        """Save what a candidate built (a compression run, or a lookup draft) and return the
        module or draft loaded back, as a user would run it."""
        if isinstance(built, LookupDraft):
            built.save(directory)
            return load_lookup_draft(directory)
        variant = save_variant(built, candidate.recipe, directory, show_progress=False,
                               profile=False)  # fmt: skip
        return variant.module

    def _runner(self, module, role: str, prompts, reference) -> DecodeRunner:
        """A draft runs beside the target and must not change its output, nor may compiled
        decoding; an int8 target runs alone (its output may change: the budget judges it)."""
        if role == "draft":
            return DecodeRunner(
                self.target, prompts, self.new_tokens, module, reference, self.decode, strict=True
            )
        if role == "compiled":
            compiled = functools.partial(self.decode, compiled=True)
            return DecodeRunner(
                self.target, prompts, self.new_tokens, None, reference, compiled, strict=True
            )
        return DecodeRunner(module, prompts, self.new_tokens, None, reference, self.decode)

    def _alone(self, prompts) -> DecodeRunner:
        return DecodeRunner(self.target, prompts, self.new_tokens, decode=self.decode)

    def _score(self, result: CandidateResult, module, role: str, timing: PairedTiming) -> None:
        quality = self.baseline.quality
        if role == "target":  # a quantized target changes its output: its quality is measured
            quality = self.loaded.task.evaluate(forward_on_its_device(module), "val").metrics
        result.quality = dict(quality)
        # `or 0.0`: an unchanged lower-is-better metric gives -0.0, printed "-0.0000".
        result.budget_value = self.budget.value(self.baseline.quality, quality) or 0.0
        result.within_budget = self.budget.met(self.baseline.quality, quality)
        # The target alone's cost scaled by a ratio timed in alternation with it (drift cancels).
        result.cost = self.baseline.cost / timing.ratio
        tokens_per_s = self.new_tokens * 1000 / timing.candidate_ms
        result.generation.update(
            tokens_per_s=tokens_per_s,
            target_tokens_per_s=self.new_tokens * 1000 / timing.original_ms,
        )
        result.objective_display = f"{tokens_per_s:,.1f} tokens/s"
        result.slower_than_original = timing.ratio < 1.0
        result.status = "measured"

    # -- the held-out check ---------------------------------------------------------------------
    def confirm(self) -> dict:
        """The held-out check (`search.draft_confirm.confirm_choice`)."""
        from wattwise.search.draft_confirm import confirm_choice

        return confirm_choice(self)


def _label(candidate: Candidate, role: str) -> str:
    """A candidate's row label: its role and recipe (compiled decoding has no recipe)."""
    return f"{role}: {COMPILED_LABEL if role == 'compiled' else candidate.label}"
