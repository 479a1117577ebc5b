"""Quantization steps on digits-cnn and a Linear stack: they run, keep quality within a
stated tolerance, shrink the quantized layers as stated, and reload bit-identically."""

from __future__ import annotations

import pytest

from tests.compress.quantize_helpers import (
    STACK,
    compress_and_reload,
    fp32_quality,
    quantized_metrics,
)
from wattwise.measure.size import serialized_size_bytes

# Quality tolerances: digits-cnn may lose at most 2 points of test accuracy (7 of 360 images);
# the Linear stack's outputs must keep a mean cosine to fp32 of at least this much.
DIGITS_ACCURACY_DROP = 0.02
STACK_FIDELITY = {"int8": 0.99, "int4": 0.95}
# Quantized layers' weight bytes, fp32 / quantized. Scales and zero points cost more on the
# stack's narrow (64- and 128-input) rows than on digits-cnn's 1024-input layer.
MIN_RATIO = {("int8", "digits-cnn"): 3.8, ("int8", STACK): 3.5, ("int4", "digits-cnn"): 7.0}
MIN_RATIO[("int4", STACK)] = 6.0

TORCH_STEPS = {
    "int8_dynamic-torch_ao-per_channel": (
        "int8",
        {"method": "int8_dynamic", "implementation": "torch_ao"},
    ),
    "int8_dynamic-torch_ao-per_tensor": (
        "int8",
        {"method": "int8_dynamic", "implementation": "torch_ao", "granularity": "per_tensor"},
    ),
    "int8_dynamic-torchao-per_channel": (
        "int8",
        {"method": "int8_dynamic", "implementation": "torchao"},
    ),
    "int8_weight_only": ("int8", {"method": "int8_weight_only"}),
    "int4_weight_only": ("int4", {"method": "int4_weight_only", "group_size": 64}),
}
ORT_STEPS = {
    "int8_dynamic-per_channel": ("int8", {"method": "int8_dynamic"}),
    "int8_dynamic-per_tensor": ("int8", {"method": "int8_dynamic", "granularity": "per_tensor"}),
    "static": ("int8", {"method": "static", "calibration_samples": 64}),
}


def check_quality(model: str, bits: str, quality: dict[str, float]) -> None:
    if model == "digits-cnn":
        floor = fp32_quality(model)["accuracy"] - DIGITS_ACCURACY_DROP
        assert quality["accuracy"] >= floor, (quality, floor)
    else:
        assert quality["fidelity"] >= STACK_FIDELITY[bits], quality


def check_size(model: str, bits: str, variant, fp32_bytes: int) -> None:
    metrics = quantized_metrics(variant)
    assert metrics["quantized_weight_size_ratio"] >= MIN_RATIO[(bits, model)], metrics
    assert variant.profile.size_bytes < fp32_bytes


@pytest.mark.parametrize("model", ["digits-cnn", STACK])
@pytest.mark.parametrize("name", list(TORCH_STEPS))
def test_torch_quantize_step_keeps_quality_shrinks_and_reloads_identically(model, name, tmp_path):
    from tests.compress.quantize_helpers import loaded

    bits, step = TORCH_STEPS[name]
    variant = compress_and_reload(model, [{"quantize": step}], "eager", tmp_path / "v")
    check_quality(model, bits, variant.profile.quality)
    check_size(model, bits, variant, serialized_size_bytes(loaded(model).module))
    assert (tmp_path / "v" / "model.safetensors").is_file()


@pytest.mark.parametrize("model", ["digits-cnn", STACK])
@pytest.mark.parametrize("name", list(ORT_STEPS))
def test_onnxruntime_quantize_step_keeps_quality_shrinks_and_reloads_identically(
    model, name, tmp_path
):
    from tests.compress.quantize_helpers import loaded

    bits, step = ORT_STEPS[name]
    variant = compress_and_reload(model, [{"quantize": step}], "onnxruntime", tmp_path / "v")
    check_quality(model, bits, variant.profile.quality)
    check_size(model, bits, variant, serialized_size_bytes(loaded(model).module))
    assert variant.manifest["deferred_steps"], "ONNX Runtime applies the step at export"


@pytest.mark.parametrize("model", ["digits-cnn", STACK])
def test_qat_fine_tunes_then_converts_to_int8(model, tmp_path):
    step = {"method": "qat", "steps": 15, "batch_size": 32, "learning_rate": 1e-4}
    variant = compress_and_reload(model, [{"quantize": step}], "eager", tmp_path / "v")
    metrics = quantized_metrics(variant)
    assert metrics["qat_steps"] == 15
    assert metrics["quantized_weight_size_ratio"] >= MIN_RATIO[("int8", model)]
    check_quality(model, "int8", variant.profile.quality)


def test_layer_selection_keeps_first_and_last_layer_fp32(tmp_path):
    layers = {"exclude": ["0", "4"]}
    step = {"method": "int8_dynamic", "implementation": "torch_ao", "layers": layers}
    variant = compress_and_reload(STACK, [{"quantize": step}], "eager", tmp_path / "v")
    rebuild = variant.manifest["rebuild"][0]
    assert rebuild["layers"] == ["2"]
    assert quantized_metrics(variant)["quantized_layers"] == 1


def test_layer_selection_reaches_onnxruntime_nodes(tmp_path):
    step = {"method": "int8_dynamic", "layers": {"include": ["classifier.3"]}}
    variant = compress_and_reload("digits-cnn", [{"quantize": step}], "onnxruntime", tmp_path / "v")
    metrics = quantized_metrics(variant)
    # Only the 256→10 layer: 10,240 bytes of fp32 weights.
    assert metrics["quantized_layers"] == 1
    assert metrics["quantized_weight_bytes_before"] == 256 * 10 * 4
