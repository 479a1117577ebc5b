"""drop_layers: a shorter encoder that still embeds and retrieves, and reloads from records."""

from __future__ import annotations

import pytest
import torch

from tests.compress.prune_helpers import run_steps, save_unprofiled
from wattwise.compress.steps.layers import evenly_spaced
from wattwise.compress.variant import load_variant
from wattwise.errors import ConfigError
from wattwise.models.registry import load_model


def test_evenly_spaced_keeps_first_and_last():
    assert evenly_spaced(6, 3) == [0, 2, 5]
    assert evenly_spaced(6, 2) == [0, 5]
    assert evenly_spaced(6, 4) == [0, 2, 3, 5]
    assert evenly_spaced(6, 1) == [5]


def test_drop_layers_on_a_model_without_an_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="needs a transformer encoder"):
        run_steps(load_model("digits-cnn"), [{"drop_layers": {"keep": 1}}])


@pytest.fixture(scope="module")
def minilm():
    return load_model("minilm")


@pytest.mark.slow
def test_keeping_three_layers_gives_a_working_encoder_that_reloads(minilm, tmp_path):
    steps = [{"drop_layers": {"keep": 3}}]
    run = run_steps(minilm, steps)
    assert len(run.module.transformer.encoder.layer) == 3
    assert run.reports[0].metrics["kept"] == [0, 2, 5]
    inputs = minilm.task.example_inputs(4, "val")
    with torch.inference_mode():
        embeddings = run.module(*inputs)
    assert embeddings.shape == (4, 384) and torch.isfinite(embeddings).all()
    quality = minilm.task.evaluate(run.module, "val").metrics
    # chance is 10/256 ≈ 0.04: a working encoder retrieves far better than that
    assert quality["recall@10"] > 0.2, quality
    save_unprofiled(run, steps, tmp_path / "v")
    reloaded = load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
    assert len(reloaded.module.transformer.encoder.layer) == 3


def test_explicit_layers_must_fit_the_encoder(minilm):
    with pytest.raises(ConfigError, match=r"distinct indices in 0\.\.5"):
        run_steps(minilm, [{"drop_layers": {"keep": 2, "layers": [0, 9]}}])
    run = run_steps(minilm, [{"drop_layers": {"keep": 2, "layers": [1, 4]}}])
    kept = run.module.transformer.encoder.layer
    assert len(kept) == 2
    assert torch.equal(
        kept[1].output.dense.weight, minilm.module.transformer.encoder.layer[4].output.dense.weight
    )
