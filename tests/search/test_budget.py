"""Budget syntax, direction, and the Pareto front."""

from __future__ import annotations

import pytest

from wattwise.errors import ConfigError
from wattwise.search.budget import parse_budget
from wattwise.search.objective import parse_objective
from wattwise.search.pareto import pareto_front


def test_drop_budget_counts_points_lost():
    budget = parse_budget("accuracy_drop<=0.01")
    assert budget.met({"accuracy": 0.98}, {"accuracy": 0.971})
    assert not budget.met({"accuracy": 0.98}, {"accuracy": 0.969})


def test_absolute_budget():
    budget = parse_budget("fidelity>=0.99")
    assert budget.met({}, {"fidelity": 0.993}) and not budget.met({}, {"fidelity": 0.989})


def test_recall_budget_parses_metric_with_at_sign():
    budget = parse_budget("recall@10_drop<=0.01")
    assert budget.metric == "recall@10" and budget.relative


@pytest.mark.parametrize("text", ["accuracy<0.5", "fidelity >= high", "", "accuracy_drop>=0.01"])
def test_bad_budget_syntax(text):
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(text)


def test_unknown_objective():
    with pytest.raises(ConfigError, match="throughput, latency, energy, size"):
        parse_objective("speed", 32)


def test_pareto_front_is_non_dominated():
    points = [(0.99, 10.0), (0.98, 5.0), (0.97, 6.0), (0.95, 1.0), (0.99, 12.0), (0.90, 1.0)]
    front = pareto_front(points)
    assert front == [3, 1, 0]
    for i in front:
        for j, (quality, cost) in enumerate(points):
            if j != i:
                assert not (
                    quality >= points[i][0]
                    and cost <= points[i][1]
                    and (quality > points[i][0] or cost < points[i][1])
                )


def test_perplexity_increase_is_relative_to_the_original():
    from wattwise.tasks.language import CausalLMTask

    # The task class carries its metrics (perplexity: lower is better).
    budget = parse_budget("perplexity_increase<=0.02", CausalLMTask)
    assert budget.text() == "perplexity_increase<=0.02"
    assert budget.met({"perplexity": 50.0}, {"perplexity": 50.9})  # +1.8%
    assert not budget.met({"perplexity": 50.0}, {"perplexity": 51.5})  # +3%
    assert budget.met({"perplexity": 50.0}, {"perplexity": 45.0})  # better
