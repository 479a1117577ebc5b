"""CUDA-only steps (int4 with torchao's CUDA kernel, fp8); skipped without CUDA."""

from __future__ import annotations

import pytest

from tests.compress.quantize_helpers import STACK, WIDE, compress_and_reload, quantized_metrics


@pytest.mark.gpu
def test_int4_cuda_kernel_shrinks_and_reloads_identically(tmp_path):
    # tinygemm pads in_features to a multiple of 1024: the 2048 × 2048 layer shows the saving.
    step = {
        "quantize": {
            "method": "int4_weight_only", "kernel": "cuda", "group_size": 64,
            "layers": {"include": ["2"]},
        }
    }  # fmt: skip
    variant = compress_and_reload(WIDE, [step], "eager", tmp_path / "v", device="cuda")
    assert quantized_metrics(variant)["quantized_weight_size_ratio"] >= 6.0
    assert variant.profile.quality["fidelity"] >= 0.95


@pytest.mark.gpu
def test_fp8_cast_keeps_fidelity_and_reloads_identically(tmp_path):
    variant = compress_and_reload(
        STACK, [{"cast": {"method": "fp8"}}], "eager", tmp_path / "v", device="cuda"
    )
    assert quantized_metrics(variant)["quantized_weight_size_ratio"] >= 3.5
    # The 128 → 10 layer cannot run float8 matmuls (10 is not a multiple of 16): left out, named.
    assert quantized_metrics(variant)["quantized_layers"] == 2
    assert any("left in fp32" in note and "4" in note for note in variant.profile.notes)
    assert variant.profile.quality["fidelity"] >= 0.99
