"""Quantization errors: one line naming the fix, exit 2, nothing half-written in -o."""

from __future__ import annotations

import pytest
import torch

from tests.cli.run_cli import assert_one_line_error, run_in_process
from tests.compress.quantize_helpers import STACK, compress_and_reload, loaded
from wattwise.compress.pipeline import compress
from wattwise.compress.quantize_storage import pack_int4, unpack_int4
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import load_variant
from wattwise.errors import ConfigError, UnsupportedOnDeviceError, VariantIntegrityError

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")


def test_unknown_quantize_method_lists_the_allowed_ones(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - quantize: {method: int3}\n")
    done = run_in_process(
        "compress", "digits-cnn", "--recipe", str(recipe), "-o", str(tmp_path / "o")
    )
    assert_one_line_error(done, "'int3'", "int8_dynamic", "int4_weight_only", "static", "qat")
    assert not (tmp_path / "o").exists()


def test_unknown_quantize_field_lists_the_fields():
    with pytest.raises(ConfigError, match=r"granularity.*implementation"):
        Recipe.from_dict({"steps": [{"quantize": {"method": "int8_dynamic", "bits": 8}}]})


def test_bad_granularity_value_names_the_allowed_values():
    with pytest.raises(ConfigError, match=r"per_channel.*per_tensor"):
        Recipe.from_dict({"steps": [{"quantize": {"method": "int8_dynamic", "granularity": "x"}}]})


def test_pytorch_implementation_on_onnxruntime_backend_is_refused_when_parsing():
    step = {"quantize": {"method": "int8_dynamic", "implementation": "torch_ao"}}
    with pytest.raises(ConfigError, match="use implementation auto"):
        Recipe.from_dict({"steps": [step], "backend": "onnxruntime"})


def test_static_on_eager_backend_says_to_use_onnxruntime(tmp_path):
    with pytest.raises(ConfigError, match="backend: onnxruntime"):
        compress_and_reload(STACK, [{"quantize": {"method": "static"}}], "eager", tmp_path / "v")
    assert not (tmp_path / "v").exists()


@needs_no_cuda
def test_int4_cuda_kernel_on_cpu_names_the_cpu_kernel_and_leaves_nothing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - quantize: {method: int4_weight_only, kernel: cuda}\n")
    out = tmp_path / "o"
    done = run_in_process("compress", "digits-cnn", "--recipe", str(recipe), "-o", str(out))
    assert_one_line_error(done, "needs CUDA", "kernel: cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


@needs_no_cuda
def test_fp8_cast_on_cpu_is_refused_with_an_alternative(tmp_path):
    with pytest.raises(UnsupportedOnDeviceError, match="cast bf16"):
        compress(loaded(STACK), {"steps": [{"cast": {"method": "fp8"}}]}, tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_failure_during_export_leaves_previous_output_untouched(tmp_path, monkeypatch):
    from wattwise.backends import onnx_quantize
    from wattwise.compress.steps.quantize import Int8Dynamic

    out = tmp_path / "v"
    compress_and_reload(STACK, [], "onnxruntime", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash_after_writing(context, module, step, source, target):
        target.write_bytes(source.read_bytes()[:100])  # half a graph, then the failure
        raise RuntimeError("simulated crash inside the backend export")

    monkeypatch.setitem(onnx_quantize.ONNX_QUANTIZERS, Int8Dynamic, crash_after_writing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compress_and_reload(STACK, [{"quantize": {"method": "int8_dynamic"}}], "onnxruntime", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["v"]


def test_tampered_quantized_weights_are_refused_on_load(tmp_path):
    out = tmp_path / "v"
    step = {"quantize": {"method": "int4_weight_only", "group_size": 32}}
    compress_and_reload(STACK, [step], "eager", out)
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(VariantIntegrityError, match="sha256"):
        load_variant(out, trust_code=True)


def test_int4_packing_round_trips_every_value():
    values = torch.arange(-8, 8, dtype=torch.int8).repeat(3, 2)
    packed = pack_int4(values)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 16)
    assert torch.equal(unpack_int4(packed), values)
