"""The quality/cost Pareto front."""

from __future__ import annotations

from collections.abc import Sequence


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
