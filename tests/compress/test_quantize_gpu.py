"""CUDA-only steps (int4 with torchao's CUDA kernel, fp8); skipped without CUDA."""

from __future__ import annotations

import pytest

from tests.compress.quantize_helpers import STACK, compress_and_reload, quantized_metrics


@pytest.mark.gpu
def test_int4_cuda_kernel_shrinks_and_reloads_identically(tmp_path):
    step = {"quantize": {"method": "int4_weight_only", "kernel": "cuda", "group_size": 64}}
    variant = compress_and_reload(STACK, [step], "eager", tmp_path / "v", device="cuda")
    assert quantized_metrics(variant)["quantized_weight_size_ratio"] >= 6.0
    assert variant.profile.quality["fidelity"] >= 0.95


@pytest.mark.gpu
def test_fp8_cast_keeps_fidelity_and_reloads_identically(tmp_path):
    variant = compress_and_reload(
        STACK, [{"cast": {"method": "fp8"}}], "eager", tmp_path / "v", device="cuda"
    )
    assert quantized_metrics(variant)["quantized_weight_size_ratio"] >= 3.5
    assert variant.profile.quality["fidelity"] >= 0.99
