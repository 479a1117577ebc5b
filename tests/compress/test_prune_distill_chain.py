"""The issue's chained recipe (prune → distill → int8 @ onnxruntime) on both built-in models;
the saved variants reload with outputs identical to those measured at compress time."""

from __future__ import annotations

import pytest

from tests.compress.prune_helpers import run_steps, save_unprofiled
from wattwise.compress.variant import load_variant
from wattwise.models.registry import load_model


def chained_steps(distill_steps: int, batch_size: int = 32) -> list[dict]:
    return [
        {"prune": {"method": "structured", "sparsity": 0.3}},
        {"distill": {"steps": distill_steps, "batch_size": batch_size}},
        {"quantize": {"method": "int8_dynamic", "granularity": "per_channel"}},
    ]


def test_chained_recipe_on_digits_cnn_reloads_identically(tmp_path):
    digits = load_model("digits-cnn")
    steps = chained_steps(100)
    run = run_steps(digits, steps, backend="onnxruntime")
    assert [s.kind for s in run.deferred] == ["quantize"]
    variant = save_unprofiled(run, steps, tmp_path / "v", backend="onnxruntime")
    assert [r["op"] for r in variant.manifest["rebuild"]] == ["resize"]
    reloaded = load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
    accuracy = digits.task.evaluate(reloaded.module, "val").metrics["accuracy"]
    original = digits.task.evaluate(digits.module, "val").metrics["accuracy"]
    assert accuracy >= original - 0.02, (original, accuracy)


@pytest.mark.slow
def test_chained_recipe_on_minilm_reloads_identically(tmp_path):
    # Distillation is cut to 2 small steps: the test checks the chain, bench/prune.py quality.
    minilm = load_model("minilm")
    steps = chained_steps(2, batch_size=4)
    run = run_steps(minilm, steps, backend="onnxruntime")
    layer = run.module.transformer.encoder.layer[0]
    assert layer.attention.self.num_attention_heads < 12
    save_unprofiled(run, steps, tmp_path / "v", backend="onnxruntime")
    reloaded = load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
    embeddings = reloaded.module(*minilm.task.example_inputs(2, "val"))
    assert embeddings.shape == (2, 384)
