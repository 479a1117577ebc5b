"""Which measured candidates may be chosen, and in what order.

Costs within `TIE_BAND` of the best are ties, broken by candidate order (milder, earlier
first), so timing noise does not flip the choice between two equally fast variants.
"""

from __future__ import annotations

from wattwise.search.objective import Objective
from wattwise.search.results import CandidateResult

TIE_BAND = 0.03


def is_eligible(result: CandidateResult, objective: Objective) -> bool:
    """Within budget on val, and not slower than the original for a speed objective."""
    if result.status != "measured" or not result.within_budget:
        return False
    return not (objective.is_speed and result.slower_than_original)


def rank(results: list[CandidateResult], objective: Objective) -> list[CandidateResult]:
    """Eligible candidates by cost, ties (within TIE_BAND) broken by search order."""
    order = {r.id: i for i, r in enumerate(results)}
    eligible = sorted((r for r in results if is_eligible(r, objective)), key=lambda r: r.cost)
    ranked: list[CandidateResult] = []
    while eligible:
        floor = eligible[0].cost
        band = [r for r in eligible if r.cost <= floor * (1 + TIE_BAND)]
        band.sort(key=lambda r: order[r.id])
        ranked.append(band[0])
        eligible.remove(band[0])
    return ranked
