"""Result types of a search (`CandidateResult`, `OptimizeResult`), and the state file that
makes `--resume` possible."""

from __future__ import annotations

import json
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
class OptimizeResult:
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

    model: str
    budget: Budget
    objective: Objective
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
    skipped_space: list[str] = field(default_factory=list)
    priors: dict[str, Any] = field(default_factory=dict)
    workload: str = ""
    outcome: str = ""
    chosen_profile: dict[str, Any] | None = None
    baseline_profile: dict[str, Any] | None = None
    report_dir: str = ""

    @property
    def batch_size(self) -> int:
        """The batch size every cost was measured at."""
        return self.objective.batch_size

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
