"""Recipes no single library offers (issue 13): the ONNX exporter choice, ONNX Runtime
transformer fusion before int8, selective int8 that replays from its saved layer list, and
SmoothQuant before per-tensor int8, on a 2-layer BERT encoder."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch

from tests.compress.tiny_bert import tiny_bert
from wattwise.compress.context import CompressionContext
from wattwise.compress.pipeline import compress
from wattwise.compress.recipe import Recipe
from wattwise.compress.steps import parse_step
from wattwise.compress.steps.sensitivity import simulated_fidelity
from wattwise.compress.steps.smooth import SmoothedLinear, apply_smoothquant
from wattwise.compress.variant import load_variant

TORCHSCRIPT = {"name": "onnxruntime", "exporter": "torchscript"}
LINEARS = 12  # 2 layers × (query, key, value, attention output, up, down)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_bert(str(tmp_path_factory.mktemp("tiny")))


def run(model, steps, backend, output):
    """Compress (short profile) and reload with bit-identical probe outputs."""
    variant = compress(
        model,
        {"steps": steps, "backend": backend},
        output,
        batch_sizes=(4,),
        measure_steps=False,
        show_progress=False,
    )
    load_variant(output, check_outputs=True)
    return variant


def ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path / "model.onnx")).graph.node}


def test_torchscript_exporter_quantizes_every_linear_by_node_name(model, tmp_path):
    steps = [{"quantize": {"method": "int8_dynamic"}}]
    variant = run(model, steps, TORCHSCRIPT, tmp_path / "v")
    assert variant.manifest["backend_manifest"]["exporter"] == "torchscript"
    # The TorchScript graph has no name-scope metadata: nodes map to layers by their names.
    (metrics,) = variant.manifest["backend_manifest"]["deferred_step_metrics"]
    assert metrics["quantized_layers"] == LINEARS
    assert "DynamicQuantizeMatMul" in ops(tmp_path / "v") or "MatMulInteger" in ops(tmp_path / "v")
    assert variant.profile.quality["fidelity"] >= 0.99
    recipe = Recipe.from_dict({"steps": steps, "backend": TORCHSCRIPT})
    assert recipe.libraries == ("torch", "onnxruntime")
    assert Recipe.from_dict({"steps": [], "backend": "onnxruntime"}).libraries == (
        "torch",
        "onnxscript",
        "onnxruntime",
    )


def test_transformer_fusion_reports_fused_operators_and_feeds_qattention(model, tmp_path):
    steps = [
        {"fuse": {"method": "onnxruntime_transformer"}},
        {"quantize": {"method": "int8_dynamic", "granularity": "per_tensor"}},
    ]
    variant = run(model, steps, TORCHSCRIPT, tmp_path / "v")
    fusion, quantize = variant.manifest["backend_manifest"]["deferred_step_metrics"]
    assert fusion["fused_operators"]["Attention"] == 2
    assert fusion["fused_operators"]["SkipLayerNormalization"] == 4
    assert fusion["num_heads"] == 4 and fusion["hidden_size"] == 64
    assert "QAttention" in ops(tmp_path / "v")
    assert quantize["quantized_layers"] == 2 + 2 * 3  # 2 Attention + (out, up, down) × 2
    assert variant.profile.quality["fidelity"] >= 0.99
    assert Recipe.from_dict({"steps": steps, "backend": TORCHSCRIPT}).libraries == (
        "torch",
        "onnxruntime",
    )


def test_fusion_on_another_backend_is_a_one_line_config_error(model, tmp_path):
    from wattwise.errors import ConfigError

    with pytest.raises(ConfigError, match="backend: onnxruntime"):
        compress(
            model,
            {"steps": [{"fuse": {"method": "onnxruntime_transformer"}}]},
            tmp_path / "v",
            measure_steps=False,
            show_progress=False,
        )


def test_selective_int8_measures_once_then_replays_exactly_from_the_saved_list(model, tmp_path):
    step = {"quantize": {"method": "int8_selective", "min_fidelity": 0.99999}}
    first = run(model, [step], TORCHSCRIPT, tmp_path / "first")
    (metrics,) = first.manifest["backend_manifest"]["deferred_step_metrics"]
    keep = metrics["keep_fp32"]
    # 12 Linears in the graph plus the unused pooler; the FFN down projections, which read the
    # outlier channels, rank first and stay fp32.
    assert "sensitivity" in metrics and len(metrics["sensitivity"]) == LINEARS + 1
    assert 1 <= len(keep) < LINEARS and keep[0].endswith("output.dense")
    assert metrics["calibration_fidelity"] >= 0.99999
    saved = first.manifest["recipe"]
    assert saved["steps"][0]["quantize"]["keep_fp32"] == keep
    # Replaying the saved recipe measures nothing and writes the same graph.
    second = run(model, saved["steps"], saved["backend"], tmp_path / "second")
    (replayed,) = second.manifest["backend_manifest"]["deferred_step_metrics"]
    assert "sensitivity" not in replayed and replayed["keep_fp32"] == keep
    assert replayed["quantized_layers"] == LINEARS - len(keep)
    files = first.manifest["files"]["model.onnx"], second.manifest["files"]["model.onnx"]
    assert files[0]["sha256"] == files[1]["sha256"]


def test_selective_int8_rejects_a_kept_layer_the_model_lacks(model, tmp_path):
    from wattwise.errors import ConfigError

    step = {"quantize": {"method": "int8_selective", "keep_fp32": ["no.such.layer"]}}
    with pytest.raises(ConfigError, match="keep_fp32"):
        compress(
            model,
            {"steps": [step], "backend": TORCHSCRIPT},
            tmp_path / "v",
            measure_steps=False,
            show_progress=False,
        )
    assert not (tmp_path / "v").exists()


def test_smoothquant_is_exact_in_fp32_and_reloads_identically(model, tmp_path):

    original = model.module.eval()
    module = copy.deepcopy(original)
    inputs = model.task.example_inputs(4, "val")
    with torch.inference_mode():
        before = module(*inputs)
    context = CompressionContext(model, model.task, module, Recipe().backend)
    step = parse_step({"smooth": {"method": "smoothquant", "alpha": 0.5}})
    outcome = apply_smoothquant(context, module, step)
    names = [n for n, m in outcome.module.named_modules() if isinstance(m, SmoothedLinear)]
    assert len(names) == LINEARS + 1  # with the (unused) pooler
    with torch.inference_mode():
        after = outcome.module(*inputs)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    # What it is for: per-tensor int8 (simulated as ONNX Runtime rounds) loses less.
    plain = simulated_fidelity(original, inputs, before, names, per_channel=False)
    smoothed = simulated_fidelity(outcome.module, inputs, before, names, per_channel=False)
    assert 1 - smoothed < 0.5 * (1 - plain), (plain, smoothed)
    # eager: scales saved with the weights; onnxruntime: smoothed then per-tensor int8.
    run(model, [{"smooth": {"method": "smoothquant"}}], "eager", tmp_path / "eager")
    steps = [
        {"smooth": {"method": "smoothquant"}},
        {"quantize": {"method": "int8_dynamic", "granularity": "per_tensor"}},
    ]
    variant = run(model, steps, TORCHSCRIPT, tmp_path / "ort")
    assert "Mul" in ops(tmp_path / "ort")
    assert (
        variant.manifest["backend_manifest"]["deferred_step_metrics"][0]["quantized_layers"]
        == LINEARS
    )


def test_bf16_cast_records_whether_this_cpu_runs_bf16_natively(model):
    from wattwise.compress.steps.cast import apply_cast

    context = CompressionContext(model, model.task, model.module, Recipe().backend)
    step = parse_step({"cast": {"method": "bf16"}})
    outcome = apply_cast(context, copy.deepcopy(model.module), step)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert outcome.metrics["cpu_bf16_native"] is native
    assert any(("natively" in n) == native for n in outcome.notes[1:])
    recipe = Recipe.from_dict({"steps": [{"cast": {"method": "bf16"}}], "backend": "torch_compile"})
    assert recipe.libraries == ("torch",)
