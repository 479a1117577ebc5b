"""Result types of a search (`CandidateResult`, `OptimizeResult`), and the state file that
makes `--resume` possible."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wattwise.errors import ConfigError, NoCandidateWithinBudgetError
from wattwise.paths import atomic_write_text
from wattwise.search.budget import Budget
from wattwise.search.machine import MachineInfo
from wattwise.search.objective import Objective

STATE_FILE = "search_state.json"


@dataclass
class CandidateResult:
    """One measured (or skipped) candidate.

    Attributes:
        status: "measured", "failed", "abandoned" (timed far slower than the best so far) or
            "skipped" (not started: no time, or the hardware probe predicts it cannot win).
        reason: why it failed or was skipped, or a note on the measurement.
        quality: metrics on the search (val) split.
        budget_value: the budgeted quantity (metric or its drop) on the val split.
        cost: the objective's cost (see Objective.unit); lower is better.
        speedup: the original's time per batch ÷ this one's, timed in alternation with the
            original (`paired` holds the interval and the number of pairs).
        prior: the hardware probe's predicted speed-up for this candidate's compute path.
        libraries: the libraries the recipe needs beyond PyTorch.
        slower_than_original: True when speedup < 1 (never chosen for speed).
        profile: the Profile as a dict (quick timing, val split).
        variant_dir: where the candidate's variant directory is.
        generation: end-to-end generation figures (draft search only): tokens_per_s (this
            candidate, median of its timed calls), target_tokens_per_s (the target alone in the
            same pairs), acceptance_rate (accepted / drafted tokens; None without a draft),
            identical_to_target (greedy tokens equal the target's on every prompt it ran),
            prompts_checked, compress_s (seconds to build it, shared distillation included),
            distill_steps (0: not distilled), role ("draft" or "target").
    """

    id: str
    family: str
    level: int
    label: str
    recipe: dict[str, Any]
    peer: str = ""
    note: str = ""
    status: str = "skipped"
    reason: str = ""
    quality: dict[str, float] = field(default_factory=dict)
    budget_value: float | None = None
    within_budget: bool = False
    cost: float | None = None
    objective_display: str = ""
    speedup: float | None = None
    slower_than_original: bool = False
    profile: dict[str, Any] | None = None
    variant_dir: str = ""
    seconds: float = 0.0
    paired: dict[str, Any] | None = None
    prior: float | None = None
    libraries: list[str] = field(default_factory=list)
    generation: dict[str, Any] | None = None

    @classmethod
    def of(cls, candidate, **fields: Any) -> CandidateResult:
        """A result for a candidate (wattwise.search.space.Candidate), before measuring."""
        return cls(
            id=candidate.id,
            family=candidate.family,
            level=candidate.level,
            label=candidate.label,
            recipe=candidate.recipe.to_dict(),
            peer=candidate.peer,
            note=candidate.note,
            **fields,
        )


@dataclass
class SearchState:
    """Everything needed to resume: the settings and every finished candidate."""

    settings: dict[str, Any]
    baseline: CandidateResult | None = None
    results: list[CandidateResult] = field(default_factory=list)

    def done_ids(self) -> set[str]:
        """Candidates already measured or failed (skips are re-decided on resume)."""
        return {r.id for r in self.results if r.status in ("measured", "failed", "abandoned")}

    def save(self, directory: Path) -> None:
        """Write the state atomically."""
        atomic_write_text(
            Path(directory) / STATE_FILE, json.dumps(asdict(self), indent=2, default=str)
        )

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> SearchState:
        """Read a previous run's state; settings must match (else resuming would mix runs)."""
        path = Path(directory) / STATE_FILE
        if not path.is_file():
            raise ConfigError(f"nothing to resume: {path} does not exist; run without --resume")
        data = json.loads(path.read_text())
        if data["settings"] != settings:
            changed = sorted(k for k in settings if data["settings"].get(k) != settings[k])
            raise ConfigError(
                f"--resume with different settings ({', '.join(changed)}); use the same options "
                "or a new --out directory"
            )
        state = cls(data["settings"])
        if data.get("baseline"):
            state.baseline = CandidateResult(**data["baseline"])
        state.results = [CandidateResult(**r) for r in data["results"] if r["status"] != "skipped"]
        return state


@dataclass
class SearchOutcome:
    """What every optimize run reports first: the model, the parsed budget and objective (not
    their text), the device, seed and time limit, the original (`baseline`, measured like every
    candidate) and every candidate in search order (measured, failed or skipped)."""

    model: str
    budget: Budget
    objective: Objective
    device: str
    seed: int
    time_limit_s: float
    baseline: CandidateResult
    candidates: list[CandidateResult]

    @property
    def batch_size(self) -> int:
        """The batch size every cost was measured at (1 for tokens_per_s)."""
        return self.objective.batch_size


@dataclass
class OptimizeResult(SearchOutcome):
    """Everything a search found; the CLI and API write the report from this.

    Attributes:
        budget / objective: the parsed budget and objective (not their text).
        baseline: the original model, measured like every candidate.
        candidates: every candidate in search order (measured, failed or skipped).
        front: ids on the quality/cost Pareto front, cheapest first.
        chosen: the cheapest candidate that held the budget on the held-out test split (the
            original itself when nothing beats it: see `outcome`).
        priors: the hardware probe (`wattwise.search.probe.Priors`) that ordered the search.
        workload: what every candidate was timed on (the fixed batch or the real corpus).
        outcome: one sentence on what the search concluded.
        confirmation: the test-split attempts, in rank order.
        chosen_variant: the directory of the chosen variant ("" when none).
        partial / stop_reason: whether and why the search stopped before measuring everything.
        chosen_profile / baseline_profile: test-split profiles of the chosen and the original.
    """

    front: list[str]
    chosen: CandidateResult | None
    confirmation: dict[str, Any]
    chosen_variant: str
    partial: bool
    stop_reason: str
    elapsed_s: float
    machine: MachineInfo
    skipped_space: list[str] = field(default_factory=list)
    priors: dict[str, Any] = field(default_factory=dict)
    workload: str = ""
    outcome: str = ""
    chosen_profile: dict[str, Any] | None = None
    baseline_profile: dict[str, Any] | None = None
    report_dir: str = ""

    @property
    def exit_code(self) -> int:
        """0 when a variant was chosen, 3 when none met the budget."""
        return 0 if self.chosen else NoCandidateWithinBudgetError.exit_code


def one_line(result: CandidateResult) -> str:
    """A candidate's outcome in one line, for progress and logs."""
    if result.status != "measured":
        return f"{result.status}: {result.reason}"
    verdict = "within budget" if result.within_budget else "breaks budget"
    speed = ""
    if result.paired:
        speed = f", {result.paired['ratio']:.2f}x ({result.paired['ratio_low']:.2f}–{result.paired['ratio_high']:.2f})"
    return f"{result.objective_display}{speed}, {verdict} ({result.budget_value:.4f})"


@dataclass
class DraftSearchResult(SearchOutcome):
    """What `optimize --objective tokens_per_s` found for a causal LM; the report reads this.

    Attributes:
        baseline: the target alone (no draft), measured like every candidate.
        candidates: drafts (keep K layers, distil N steps, int8 or not) and the int8 target, in
            search order, each with `generation` figures and its paired timing.
        chosen: the fastest candidate within budget that held on the held-out prompts, or the
            baseline when nothing beats the target alone (exit 0 either way).
        chosen_variant: the chosen variant directory ("" when the target alone is chosen).
        chosen_role: "draft" (use it with `generate --draft`), "target" (use it instead of
            the model), "compiled" (the model itself with `generate --compile`) or "" (the
            target alone).
        usage: the command that uses the choice.
        workload: the prompts and token counts every candidate was timed on.
        confirmation: the held-out check: attempts, timing, agreement.
        outcome: one sentence on what the search concluded.
    """

    chosen: CandidateResult | None
    chosen_variant: str
    chosen_role: str
    usage: str
    workload: str
    confirmation: dict[str, Any]
    partial: bool
    stop_reason: str
    elapsed_s: float
    machine: MachineInfo
    outcome: str = ""
    report_dir: str = ""

    @property
    def exit_code(self) -> int:
        """0 when a choice was made (the target alone included), 3 when none held."""
        return 0 if self.chosen else NoCandidateWithinBudgetError.exit_code

    def table(self) -> list[dict[str, Any]]:
        """One JSON-ready row per candidate, the target alone first: what the CLI's --json and
        the report list (label, status, tokens_per_s, speedup with its 95% interval,
        acceptance_rate, compress_s, distill_steps, libraries, identical_to_target, reason)."""
        rows = []
        # The target alone as it ran in the candidates' pairs: its first reference pass ran
        # colder (573 vs 853-886 tokens/s in one run), which made a 0.86x candidate's tokens/s
        # look higher than the target's.
        in_pairs = [
            c.generation["target_tokens_per_s"]
            for c in self.candidates
            if c.generation and c.generation.get("target_tokens_per_s")
        ]
        for result in [self.baseline, *self.candidates]:
            figures = result.generation or {}
            paired = result.paired or {}
            tokens_per_s, source = figures.get("tokens_per_s"), "own timed calls"
            if result is self.baseline:
                source = "reference pass"
                if in_pairs:
                    tokens_per_s, source = statistics.median(in_pairs), "median in the pairs"
            rows.append(
                {
                    "id": result.id,
                    "label": result.label,
                    "role": figures.get("role", "original"),
                    "status": result.status,
                    "tokens_per_s": tokens_per_s,
                    "tokens_per_s_from": source,
                    "speedup": result.speedup,
                    "speedup_low": paired.get("ratio_low"),
                    "speedup_high": paired.get("ratio_high"),
                    "acceptance_rate": figures.get("acceptance_rate"),
                    "compress_s": figures.get("compress_s"),
                    "distill_steps": figures.get("distill_steps"),
                    "libraries": result.libraries,
                    "identical_to_target": figures.get("identical_to_target"),
                    "within_budget": result.within_budget,
                    "quality": result.quality,
                    "chosen": self.chosen is not None and result.id == self.chosen.id,
                    "reason": result.reason,
                }
            )
        return rows
