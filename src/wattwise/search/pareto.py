"""The quality/cost Pareto front."""

from __future__ import annotations

from collections.abc import Sequence

from wattwise.search.budget import Budget
from wattwise.search.results import CandidateResult


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of non-dominated points, where each point is (quality, cost): higher quality
    and lower cost are better. Sorted by cost."""
    front = []
    for i, (quality_i, cost_i) in enumerate(points):
        dominated = any(
            quality_j >= quality_i
            and cost_j <= cost_i
            and (quality_j > quality_i or cost_j < cost_i)
            for j, (quality_j, cost_j) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][1])


def quality_axis(budget: Budget, result: CandidateResult) -> float:
    """A candidate's quality on the front's axis, where higher is better: the budgeted metric,
    or its drop from the original negated (a drop of 0.01 is worse than one of 0.00)."""
    if budget.relative:
        return -(result.budget_value or 0.0)
    value = result.quality.get(budget.metric, 0.0)
    return value if budget.higher_is_better else -value


def front_ids(budget: Budget, members: Sequence[CandidateResult]) -> list[str]:
    """Ids of the candidates on the quality/cost front, cheapest first."""
    points = [(quality_axis(budget, r), r.cost) for r in members]
    return [members[i].id for i in pareto_front(points)]
