"""The held-out check: re-score the best candidates on the test split, re-time them the way the
search did, and say whether the two figures agree.

A choice is only as good as the agreement between the figure that made it and the one a user
will see: the chosen variant is loaded back from disk (hashes verified), scored on the test
split the search never used, and timed again in alternation with the original. When the
original itself ranks first, it is the chosen one, and the outcome says there is nothing to
gain on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wattwise.compress.pipeline import run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import (
    copy_variant,
    load_variant,
    profile_overrides,
    record_profile,
    save_variant,
)
from wattwise.errors import ConfigError
from wattwise.measure.profile import Profile
from wattwise.search.deadline import SLICE_SHARE
from wattwise.search.results import CandidateResult
from wattwise.search.runner import Search
from wattwise.search.timing import time_against_original
from wattwise.search.workload import make_workload


@dataclass
class Confirmation:
    """What the held-out check found.

    Attributes:
        chosen: the first ranked candidate that held the budget on the test split (or the
            original, when it ranked first); None when none did.
        attempts: one entry per candidate checked, in rank order.
        chosen_profile / baseline_profile: test-split profiles of the chosen and the original.
        timing: the chosen one's held-out paired timing (PairedTiming as a dict).
        agreement: whether the held-out ratio agrees with the search's, and if not why.
        outcome: one sentence for the report's headline.
    """

    chosen: CandidateResult | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    chosen_profile: Profile | None = None
    baseline_profile: Profile | None = None
    timing: dict[str, Any] | None = None
    agreement: str = ""
    outcome: str = ""
    corpus_timing: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The part of it the report shows under "held-out confirmation"."""
        return {
            "attempts": self.attempts,
            "timing": self.timing,
            "agreement": self.agreement,
            "corpus_timing": self.corpus_timing,
        }


def confirm(search: Search, ranked: list[CandidateResult]) -> Confirmation:
    """Check `ranked` (best first) on the test split until one holds the budget there."""
    found = Confirmation()
    original = search.original()
    batch = search.objective.batch_size
    for position, result in enumerate(ranked):
        if position and search.deadline.left_with_grace() < 2 * search.eval_s:
            found.attempts.append(
                {"id": result.id, "label": result.label, "met": False, "skipped": "no time left"}
            )
            break
        if result.id == "original":
            # The original needs no held-out check of itself: its val profile stands.
            profile = Profile.from_dict(search.state.baseline.profile)
            _keep_original(search, profile)
            found.chosen, found.chosen_profile, found.baseline_profile = result, profile, profile
            found.outcome = (
                "The original is the cheapest within budget; nothing to gain on this machine at "
                f"batch {batch}."
            )
            break
        if found.baseline_profile is None:
            found.baseline_profile = search.original_scored_on("test")
        baseline_profile = found.baseline_profile
        # Trusted: this search wrote these variants from the model the user named.
        variant = load_variant(result.variant_dir, trust_code=True)
        test_profile = search.profile(variant, "test", profile_overrides(variant))
        reference = baseline_profile.quality
        met = search.budget.met(reference, test_profile.quality)
        attempt = {
            "id": result.id,
            "label": result.label,
            "test_quality": test_profile.quality,
            "budget_value": search.budget.value(reference, test_profile.quality),
            "met": met,
        }
        found.attempts.append(attempt)
        if not met:
            continue
        workload = make_workload(original.task, batch, "test", search.workload.name)
        # Its own slice: the candidates' share of the limit, or a quarter of what is left
        # before limit + grace (the candidates' slice is already spent down to nothing here).
        slice_s = max(
            1.0, min(SLICE_SHARE * search.deadline.limit_s, search.deadline.left_with_grace() / 4)
        )
        timing = time_against_original(
            workload.runner(variant.module),
            workload.runner(original.module),
            slice_s=slice_s,
            precision=search.objective.timing_precision,
            original_warm_s=search.batch_s() if workload.name == "fixed" else None,
        )
        attempt["timing"] = timing.to_dict()
        corpus = _corpus_workload(original.task, batch) if workload.name == "fixed" else None
        if corpus is not None:
            corpus_timing = time_against_original(
                corpus.runner(variant.module),
                corpus.runner(original.module),
                slice_s=slice_s,
                precision=search.objective.timing_precision,
            )
            found.corpus_timing = {**corpus_timing.to_dict(), "workload": corpus.describe()}
        found.chosen, found.chosen_profile, found.timing = result, test_profile, timing.to_dict()
        found.agreement = agreement(result.paired, timing)
        found.outcome = (
            f"Chosen: {result.label}, {timing.describe()} the original's throughput at batch "
            f"{batch} on the held-out split."
        )
        copy_variant(
            search.out / "candidates" / result.id, search.out / "variant", profile=test_profile
        )
        break
    return found


def _corpus_workload(task, batch: int):
    """The test split's real-text workload, or None when the task has no corpus (built once:
    tokenizing the split is the costly part)."""
    try:
        return make_workload(task, batch, "test", "corpus")
    except ConfigError:
        return None


def agreement(search_timing: dict[str, Any] | None, held_out) -> str:
    """Whether the search's paired ratio and the held-out one (a PairedTiming) agree: their
    95% intervals overlap; if not, the likely reasons."""
    if not search_timing:
        return "no search timing to compare"
    low, high = search_timing["ratio_low"], search_timing["ratio_high"]
    if low <= held_out.ratio_high and held_out.ratio_low <= high:
        return (
            f"agrees: search {search_timing['ratio']:.2f}x ({low:.2f}–{high:.2f}), held-out "
            f"{held_out.describe()}"
        )
    return (
        f"differs: search {search_timing['ratio']:.2f}x ({low:.2f}–{high:.2f}) vs held-out "
        f"{held_out.describe()}; the intervals do not overlap"
        + _which_side_moved(search_timing, held_out)
    )


def _which_side_moved(search_timing: dict[str, Any], held_out) -> str:
    """Name the side whose time per batch changed between the search and the held-out check
    (a drift of the original alone inflates or deflates the search's ratio)."""
    moves = {
        side: held / searched - 1
        for side, searched, held in (
            ("candidate", search_timing.get("candidate_ms"), held_out.candidate_ms),
            ("original", search_timing.get("original_ms"), held_out.original_ms),
        )
        if searched and held
    }
    if len(moves) < 2:
        return (
            ": the machine's speed changed between the two, or the test inputs differ in a way "
            "that matters (e.g. sequence lengths)"
        )
    moved = max(moves, key=lambda side: abs(moves[side]))
    other = "original" if moved == "candidate" else "candidate"
    return (
        f": the {moved}'s time per batch changed {moves[moved]:+.0%} between the search and "
        f"the held-out check, the {other}'s {moves[other]:+.0%} (another process, frequency "
        "changes, or inputs that differ in a way that matters, e.g. sequence lengths)"
    )


def _keep_original(search: Search, profile: Profile) -> None:
    """Save the original as the chosen variant (no steps, eager), with its test profile."""
    recipe = Recipe()
    run = run_recipe(search.loaded, recipe, measure_steps=False, show_progress=False)
    directory = search.out / "candidates" / "original"
    save_variant(run, recipe, directory, show_progress=False, profile=False)
    record_profile(directory, profile)
    copy_variant(directory, search.out / "variant", profile=profile)
