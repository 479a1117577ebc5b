"""Quality budgets: "accuracy_drop<=0.01", "fidelity>=0.99", "recall@10_drop<=0.01".

A budget names a task metric, either as an absolute bound (`fidelity>=0.99`) or as the drop
from the original model's value (`accuracy_drop<=0.01`, in the metric's own units: 0.01 is one
accuracy point), or as a relative worsening (`perplexity_increase<=0.02`: at most 2% above the
original's perplexity).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wattwise.errors import ConfigError
from wattwise.tasks.base import Task

PATTERN = re.compile(
    r"^\s*([A-Za-z0-9@_]+?)(_drop|_increase)?\s*(<=|>=)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$"
)
EXAMPLES = '"accuracy_drop<=0.01", "fidelity>=0.99", "perplexity_increase<=0.02"'


@dataclass(frozen=True)
class Budget:
    """A bound on one quality metric.

    Attributes:
        metric: task metric name (e.g. "accuracy", "fidelity", "recall@10").
        relative: True for a drop from the original's value, False for an absolute bound.
        operator: "<=" or ">=".
        threshold: the bound.
        higher_is_better: the metric's direction (from the task).
    """

    metric: str
    relative: bool
    operator: str
    threshold: float
    higher_is_better: bool = True
    # "_increase": the relative worsening (candidate − baseline) / baseline, for metrics such
    # as perplexity where a fraction of the original is the natural bound.
    ratio: bool = False

    def text(self) -> str:
        """The budget as the user wrote it (normalized)."""
        suffix = ("_increase" if self.ratio else "_drop") if self.relative else ""
        return f"{self.metric}{suffix}{self.operator}{self.threshold:g}"

    def value(self, baseline: dict[str, float], candidate: dict[str, float]) -> float:
        """The budgeted quantity: the metric itself, or its drop from the baseline
        (a drop is positive when the candidate is worse, whatever the metric's direction)."""
        if not self.relative:
            return candidate[self.metric]
        difference = baseline[self.metric] - candidate[self.metric]
        if self.ratio:
            difference /= abs(baseline[self.metric]) or float("nan")
        return difference if self.higher_is_better else -difference

    def met(self, baseline: dict[str, float], candidate: dict[str, float]) -> bool:
        """Whether `candidate` is within the budget."""
        value = self.value(baseline, candidate)
        # 1e-9 absorbs float noise for candidates that are exactly on the bound.
        return (
            value <= self.threshold + 1e-9
            if self.operator == "<="
            else value >= self.threshold - 1e-9
        )

    def slack(self, baseline: dict[str, float], candidate: dict[str, float]) -> float:
        """How far inside (positive) or outside (negative) the budget a candidate is."""
        value = self.value(baseline, candidate)
        return self.threshold - value if self.operator == "<=" else value - self.threshold


def parse_budget(text: str, task: Task | None = None) -> Budget:
    """Parse a budget string, checking its metric against the task's metrics when given."""
    match = PATTERN.match(text or "")
    if not match:
        raise ConfigError(f"bad budget {text!r}: write it like {EXAMPLES}")
    metric, drop, operator, number = match.groups()
    relative = bool(drop)
    if relative and operator != "<=":
        raise ConfigError(
            f"bad budget {text!r}: a drop is bounded from above, e.g. {metric}_drop<=0.01"
        )
    higher_is_better = True
    if task is not None:
        names = {spec.name: spec for spec in task.metrics}
        if metric not in names:
            raise ConfigError(
                f"budget metric {metric!r} is not a metric of this model's task; use one of "
                f"{', '.join(names)} (e.g. {next(iter(names))}_drop<=0.01)"
            )
        higher_is_better = names[metric].higher_is_better
    return Budget(metric, relative, operator, float(number), higher_is_better, drop == "_increase")


def default_budget(task: Task) -> Budget:
    """One point of the task's primary metric: `<primary>_drop<=0.01`."""
    return parse_budget(f"{task.primary_metric.name}_drop<=0.01", task)
