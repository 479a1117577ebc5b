"""Shared by the quantization tests: compress a model, reload it, read the step's sizes."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from wattwise.compress.pipeline import compress
from wattwise.compress.variant import Variant, load_variant
from wattwise.models.registry import LoadedModel, ModelOptions, load_model

STACK = "tests.helpers:linear_stack"
WIDE = "tests.helpers:wide_mlp"  # 64 → 2048 → 2048 → 10
BATCH_SIZES = (8,)


@cache
def loaded(model: str) -> LoadedModel:
    """digits-cnn or a Linear stack (64 inputs, fidelity on seeded random inputs)."""
    options = ModelOptions(input_shape="64") if model in (STACK, WIDE) else None
    return load_model(model, options)


@cache
def fp32_quality(model: str) -> dict[str, float]:
    """The unquantized model's test-split quality."""
    source = loaded(model)
    return source.task.evaluate(source.module, "test").metrics


def compress_and_reload(
    model: str, steps: list, backend: Any, output: Path, device: str = "cpu"
) -> Variant:
    """Compress, then reload with `check_outputs=True` (bit-identical to compress time)."""
    recipe = {"steps": steps, "backend": backend}
    variant = compress(
        loaded(model),
        recipe,
        output,
        device=device,
        batch_sizes=BATCH_SIZES,
        measure_steps=False,
        show_progress=False,
    )
    load_variant(output, check_outputs=True, trust_code=True)
    return variant


def quantized_metrics(variant: Variant) -> dict[str, Any]:
    """The size metrics of the (single) quantization step, torch-side or ONNX Runtime."""
    deferred = variant.manifest["backend_manifest"].get("deferred_step_metrics", [])
    if deferred:
        return deferred[0]
    return variant.manifest["step_reports"][0]["metrics"]
