"""Distillation wins back what pruning lost; it refuses tasks without data or the wrong loss."""

from __future__ import annotations

import pytest
import torch

from tests.cli.run_cli import assert_one_line_error, run_in_process
from tests.compress.prune_helpers import run_steps
from tests.helpers import linear_stack
from wattwise.errors import ConfigError
from wattwise.models.registry import LoadedModel, load_model
from wattwise.tasks.arrays import ArrayTask


@pytest.mark.slow
def test_distillation_brings_half_pruned_digits_cnn_back_within_one_point():
    digits = load_model("digits-cnn")
    original = digits.task.evaluate(digits.module, "val").metrics["accuracy"]
    pruned = run_steps(digits, [{"prune": {"method": "structured", "sparsity": 0.5}}])
    pruned_accuracy = digits.task.evaluate(pruned.module, "val").metrics["accuracy"]
    run = run_steps(
        digits,
        [{"prune": {"method": "structured", "sparsity": 0.5}}, {"distill": {"steps": 300}}],
    )
    distilled = digits.task.evaluate(run.module, "val").metrics["accuracy"]
    assert pruned_accuracy < original - 0.01  # pruning alone loses more than a point here
    assert distilled >= original - 0.01, (original, pruned_accuracy, distilled)
    metrics = run.reports[-1].metrics
    assert metrics["steps"] == 300 and metrics["loss"] == "kl"
    assert metrics["final_loss"] < metrics["first_loss"]


def test_distill_without_task_data_is_one_line_exit_2_and_writes_nothing(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - distill: {steps: 5}\n")
    out = tmp_path / "out"
    done = run_in_process(
        "compress", "tests.helpers:linear_stack", "--input-shape", "64", "-r", str(recipe),
        "-o", str(out),
    )  # fmt: skip
    assert_one_line_error(done, "distill needs training data", "--data")
    assert not out.exists()


def _unlabelled_model() -> LoadedModel:
    model = linear_stack()
    features = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    task = ArrayTask("vectors", features, None, "fidelity", reference=linear_stack())
    return LoadedModel("stack", model, task, "factory", {"spec": "stack"})


def test_kl_loss_needs_logits():
    with pytest.raises(ConfigError, match="loss kl needs logits"):
        run_steps(_unlabelled_model(), [{"distill": {"steps": 2, "loss": "kl"}}])


def test_mse_distillation_moves_a_pruned_student_towards_its_teacher():
    loaded = _unlabelled_model()
    steps = [{"prune": {"method": "structured", "sparsity": 0.5}}]
    pruned = run_steps(loaded, steps).module
    distilled = run_steps(
        loaded, [*steps, {"distill": {"steps": 60, "loss": "mse", "batch_size": 16}}]
    ).module
    before = loaded.task.evaluate(pruned, "val").metrics["fidelity"]
    after = loaded.task.evaluate(distilled, "val").metrics["fidelity"]
    assert after > before + 0.01, (before, after)
