"""Frozen-layer fine-tuning: only unfrozen weights move; the metric comes with its interval."""

from __future__ import annotations

import pytest
import torch

from tests.cli.run_cli import assert_one_line_error, run_in_process
from tests.compress.prune_helpers import run_steps
from wattwise.compress.recipe import Recipe
from wattwise.compress.steps.finetune import pattern_matches
from wattwise.errors import ConfigError
from wattwise.models.registry import load_model


def test_finetune_moves_only_unfrozen_parameters_and_reports_metric_with_ci():
    digits = load_model("digits-cnn")
    steps = [
        {"prune": {"method": "structured", "sparsity": 0.5}},
        {"finetune": {"steps": 40, "freeze": "features.*", "sample": 0.2}},
    ]
    pruned = run_steps(digits, steps[:1]).module
    run = run_steps(digits, steps)
    for name, tensor in run.module.state_dict().items():
        same = torch.equal(tensor, pruned.state_dict()[name])
        assert same == name.startswith("features."), name
    metrics = run.reports[-1].metrics
    assert metrics["eval_split"] == "val" and metrics["eval_samples"] > 0
    assert 0 < metrics["accuracy_ci95"] < 0.1
    assert metrics["accuracy"] > 0.8
    assert any("95% interval" in note for note in run.reports[-1].notes)


def test_freeze_patterns_work_as_regex_or_glob():
    name = "transformer.encoder.layer.2.attention.self.query.weight"
    assert pattern_matches("encoder.layer.[0-3].*", name)  # the example, as a regex
    assert not pattern_matches("encoder.layer.[0-1].*", name)
    assert pattern_matches("*.bias", "classifier.3.bias")  # a glob (not a valid regex)
    assert pattern_matches("attention.*", name)  # glob on a dotted suffix


def test_freeze_pattern_matching_nothing_is_one_line_exit_2(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text('steps:\n  - finetune: {steps: 5, freeze: "encoder.layer.*"}\n')
    out = tmp_path / "out"
    done = run_in_process("compress", "digits-cnn", "-r", str(recipe), "-o", str(out))
    assert_one_line_error(done, "freeze pattern 'encoder.layer.*' matches no parameter")
    assert not out.exists()


@pytest.mark.parametrize("sample", [0.0, 1.5, -3])
def test_sample_must_be_a_fraction_or_a_count(sample):
    with pytest.raises(ConfigError, match="sample"):
        Recipe.from_dict({"steps": [{"finetune": {"sample": sample}}]})
