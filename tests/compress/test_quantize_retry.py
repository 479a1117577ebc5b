"""A quantize step that breaks a model is retried without the layers that break it."""

from __future__ import annotations

import copy

import pytest
import torch

from wattwise.compress.pipeline import compress, run_recipe
from wattwise.compress.quantize_retry import LEFT_OUT_NOTE, run_probe
from wattwise.compress.recipe import Recipe
from wattwise.compress.torch_quantize import quantize_with_record
from wattwise.compress.variant import load_variant
from wattwise.models.registry import ModelOptions, load_model

INT8_EAGER = {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": "eager"}


def _encoder_layer_linears(index: int) -> list[str]:
    prefix = f"encoder.layers.{index}"
    return [f"{prefix}.self_attn.out_proj", f"{prefix}.linear1", f"{prefix}.linear2"]


def test_torch_ao_int8_on_transformer_encoder_leaves_out_its_layers_and_replays(tmp_path):
    loaded = load_model("tests.helpers:token_transformer", ModelOptions(input_shape="10"))
    plain = copy.deepcopy(loaded.module)
    every_linear = [n for n, m in plain.named_modules() if isinstance(m, torch.nn.Linear)]
    record = {"implementation": "torch_ao", "scheme": "int8_dynamic", "layers": every_linear}
    plain, _ = quantize_with_record(plain, record)
    with pytest.raises(AttributeError, match="'function' object has no attribute 'device'"):
        run_probe(plain, loaded.task.example_inputs(2))  # what happens without the retry
    variant = compress(
        loaded, INT8_EAGER, tmp_path / "variant", batch_sizes=(2,), show_progress=False
    )
    (report,) = variant.reports
    left_out = report.metrics["layers_left_out"]
    assert sorted(left_out) == sorted(_encoder_layer_linears(0) + _encoder_layer_linears(1))
    assert [entry["failed_in"] for entry in report.metrics["left_out"]] == [
        "encoder.layers.0 (TransformerEncoderLayer)",
        "encoder.layers.1 (TransformerEncoderLayer)",
    ]
    assert "'function' object has no attribute 'device'" in report.metrics["left_out"][0]["error"]
    (note,) = [n for n in variant.profile.notes if n.startswith(LEFT_OUT_NOTE)]
    assert "encoder.layers.1.linear2" in note and "1 quantized" in note
    (record,) = variant.manifest["rebuild"]
    assert record["layers"] == ["head"]
    reloaded = load_variant(tmp_path / "variant", check_outputs=True, trust_code=True)
    assert type(reloaded.module.head).__module__.startswith("torch.ao.nn.quantized")
    assert variant.profile.quality["fidelity"] > 0.99


def test_a_model_quantize_does_not_break_keeps_every_layer():
    loaded = load_model("tests.helpers:token_gru", ModelOptions(input_shape="12"))
    run = run_recipe(loaded, Recipe.from_dict(INT8_EAGER), measure_steps=False)
    assert run.rebuild[0]["layers"] == ["head"]
    assert "layers_left_out" not in run.reports[0].metrics
    assert not any(n.startswith(LEFT_OUT_NOTE) for n in run.notes)


def test_failure_in_the_models_own_code_is_isolated_layer_by_layer():
    loaded = load_model("tests.helpers:shared_weight_model", ModelOptions(input_shape="16"))
    run = run_recipe(loaded, Recipe.from_dict(INT8_EAGER), measure_steps=False)
    assert run.reports[0].metrics["layers_left_out"] == ["proj"]
    assert run.reports[0].metrics["left_out"][0]["failed_in"] == ""
    assert run.rebuild[0]["layers"] == ["head"]
    inputs = loaded.task.example_inputs(4)
    with torch.inference_mode():
        assert torch.allclose(run.module(*inputs), loaded.module(*inputs), atol=0.05)


def test_when_every_layer_breaks_the_step_is_a_one_line_config_error():
    from wattwise.errors import ConfigError

    loaded = load_model("tests.helpers:shared_weight_model", ModelOptions(input_shape="16"))
    only_proj = {
        "steps": [{"quantize": {"method": "int8_dynamic", "layers": {"include": ["proj"]}}}],
        "backend": "eager",
    }
    with pytest.raises(ConfigError, match="breaks the model"):
        run_recipe(loaded, Recipe.from_dict(only_proj), measure_steps=False)
