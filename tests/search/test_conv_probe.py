"""The probe's convolution half: CNN priors from a timed Conv2d, and static int8 that
quantizes every convolution, BatchNorm-folded ones included."""

from __future__ import annotations

import pytest
import torch

from tests.compress.prune_models import small_resnet
from wattwise.search.machine import machine_info
from wattwise.search.ordering import compute_path, order_candidates
from wattwise.search.probe import Priors, probe
from wattwise.search.space import make_candidate


def test_a_cnn_gets_its_dominant_convolution_timed():
    priors = probe(small_resnet(), (torch.randn(8, 3, 16, 16),), machine_info(), budget_s=30.0)
    assert priors.conv_share > 0.9 and priors.linear_share < 0.01
    assert set(priors.conv_ratios) == {"torch_bf16", "ort_fp32", "ort_int8_static"}
    assert all(ratio > 0 for ratio in priors.conv_ratios.values())
    assert "16→16 3×3" in priors.conv_shape and priors.conv_fp32_ms > 0


def test_model_level_prior_weights_each_path_by_what_it_runs_faster():
    priors = Priors(
        ratios={"ort_int8": 3.0},
        linear_share=0.1,
        conv_share=0.8,
        conv_ratios={"ort_fp32": 2.0, "ort_int8_static": 4.0},
    )
    # static: Linear through ORT's int8 kernels, convolutions through QLinearConv
    assert priors.ratio("ort_int8_static") == pytest.approx(1 / (0.1 + 0.1 / 3 + 0.8 / 4))
    # dynamic int8 leaves the convolutions in ONNX Runtime's fp32 kernels
    assert priors.ratio("ort_int8") == pytest.approx(1 / (0.1 + 0.1 / 3 + 0.8 / 2))
    # torch.ao's dynamic int8 leaves them in fp32 eager; an unmeasured path keeps the default
    assert priors.ratio("torch_ao_int8", default=0.7) == pytest.approx(0.7)
    assert priors.ratio("torchao_int8") == pytest.approx(1.0)


def test_static_int8_is_its_own_path_and_goes_first_when_the_probe_says_so():
    static = make_candidate(
        "f", 0, {"steps": [{"quantize": {"method": "static"}}], "backend": "onnxruntime"}
    )
    dynamic = make_candidate(
        "f", 1, {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": "onnxruntime"}
    )
    assert compute_path(static.recipe) == "ort_int8_static"
    assert compute_path(dynamic.recipe) == "ort_int8"
    priors = Priors(
        linear_share=0.0, conv_share=0.95, conv_ratios={"ort_fp32": 1.2, "ort_int8_static": 2.5}
    )
    order = order_candidates([dynamic, static], priors).order
    assert [candidate.recipe.steps[0].method for candidate, _ in order] == [
        "static",
        "int8_dynamic",
    ]


def test_static_int8_quantizes_every_convolution_batchnorm_folded_ones_too(tmp_path):
    from tests.compress.prune_helpers import run_steps, save_unprofiled
    from wattwise.models.registry import ModelOptions, load_model

    loaded = load_model(
        "tests.compress.prune_models:small_resnet", ModelOptions(input_shape="3,16,16")
    )
    steps = [{"quantize": {"method": "static", "calibration_samples": 16}}]
    run = run_steps(loaded, steps, backend="onnxruntime")
    variant = save_unprofiled(run, steps, tmp_path / "v", backend="onnxruntime")
    metrics = variant.manifest["backend_manifest"]["deferred_step_metrics"][0]
    assert metrics["quantized_layers"] == 6, metrics  # 5 convolutions and the classifier


def test_the_report_shows_both_halves_of_the_probe_with_their_shares():
    from wattwise.report.sections import probe_lines

    priors = Priors(
        ratios={"ort_int8": 2.0},
        shape=(32, 64, 64),
        linear_share=0.1,
        conv_ratios={"ort_int8_static": 3.0},
        conv_share=0.9,
        conv_shape="8 × 3→16 3×3 /1 on 16×16",
    )
    text = "\n".join(probe_lines(priors.to_dict()))
    assert "## Hardware probe" in text and "10% of the FLOPs" in text and "90% of the FLOPs" in text
    assert "ort_int8 2.00x" in text and "ort_int8_static 3.00x" in text
    assert probe_lines(Priors().to_dict()) == []


def test_a_slow_first_call_is_set_up_not_the_paths_speed():
    import time

    from wattwise.search.probe import path_ratio

    calls = []

    def first_call_slow():  # a kernel built on first use, then as fast as fp32
        calls.append(1)
        time.sleep(0.05 if len(calls) == 1 else 0.001)

    def fp32():
        time.sleep(0.001)

    failures: dict[str, str] = {}
    assert 0.5 < path_ratio(first_call_slow, fp32, 0.5, failures, "jit") < 2.0
    assert not failures
    hopeless = path_ratio(lambda: time.sleep(0.05), fp32, 0.5, failures, "slow")
    assert hopeless < 0.1 and "not timed further" in failures["slow"]
