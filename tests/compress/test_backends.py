"""Backends: the issue's recipe (int8 dynamic per-channel on ONNX Runtime) from the command
line, torch.compile, and the variant files they write."""

from __future__ import annotations

import onnx
import pytest
import torch

from tests.cli.run_cli import run_cli, run_json
from tests.compress.quantize_helpers import STACK, compress_and_reload, loaded
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import load_variant
from wattwise.errors import ConfigError
from wattwise.models.onnx_model import OnnxModule, RunOptions

ISSUE_RECIPE = """steps:
  - quantize: {method: int8_dynamic, granularity: per_channel}
backend: onnxruntime
"""


def write_recipe(tmp_path, text: str = ISSUE_RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_issue_recipe_on_digits_from_the_cli_then_profile_and_reload(tmp_path):
    out = tmp_path / "out"
    result = run_json(
        "compress",
        "digits-cnn",
        "--recipe",
        str(write_recipe(tmp_path)),
        "-o",
        str(out),
        "--batch-sizes",
        "8",
    )
    manifest = result["manifest"]
    assert set(manifest["files"]) == {"model.onnx", "probe.safetensors"}
    assert manifest["recipe"]["backend"] == {"name": "onnxruntime"}
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
    profile = run_json("profile", str(out), "--batch-sizes", "8")
    assert profile["size_bytes"] == manifest["profile"]["size_bytes"]
    assert profile["quality"]["accuracy"] >= 0.95
    reloaded = load_variant(out, check_outputs=True, trust_code=True)
    assert isinstance(reloaded.module, OnnxModule)


@pytest.mark.slow
def test_issue_recipe_on_minilm_keeps_fidelity_and_reloads_identically(tmp_path):
    # One compress (export ~10 s, quantization, a short profile) and one reload check.
    variant = compress_and_reload(
        "minilm", [{"quantize": {"method": "int8_dynamic"}}], "onnxruntime", tmp_path / "v"
    )
    assert variant.profile.quality["fidelity"] >= 0.98
    metrics = variant.manifest["backend_manifest"]["deferred_step_metrics"][0]
    assert metrics["quantized_layers"] == 36  # 6 layers × (q, k, v, out, up, down)
    assert metrics["quantized_weight_size_ratio"] >= 3.8


def test_onnx_export_has_dynamic_batch_axis(tmp_path):
    compress_and_reload(STACK, [], "onnxruntime", tmp_path / "v")
    module = OnnxModule(tmp_path / "v" / "model.onnx")
    ((shape, _),) = module.input_spec()
    assert not isinstance(shape[0], int) and shape[1] == 64
    for batch in (1, 3, 17):
        inputs = loaded(STACK).task.example_inputs(batch)
        expected = loaded(STACK).module(*inputs)
        torch.testing.assert_close(module(*inputs), expected, atol=1e-5, rtol=1e-5)


def test_torch_compile_backend_reloads_quantized_weights_identically(tmp_path):
    step = {"quantize": {"method": "int8_dynamic", "implementation": "torch_ao"}}
    variant = compress_and_reload(STACK, [step], {"name": "torch_compile"}, tmp_path / "v")
    assert (tmp_path / "v" / "model.safetensors").is_file()
    assert any("torch.compile" in note for note in variant.manifest["notes"])


def test_tampered_onnx_file_is_refused_on_load(tmp_path):
    out = tmp_path / "out"
    compress_and_reload(
        "digits-cnn", [{"quantize": {"method": "int8_dynamic"}}], "onnxruntime", out
    )
    data = bytearray((out / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (out / "model.onnx").write_bytes(bytes(data))
    done = run_cli("profile", str(out))
    assert done.returncode == 2
    assert "does not match its sha256" in done.stderr


def test_an_onnx_variant_saved_without_a_profile_reads_its_files_where_they_landed(tmp_path):
    # The search saves candidates with profile=False, then profiles the returned module: the
    # module must read model.onnx from the variant directory, not from the renamed staging one.
    from wattwise.compress.pipeline import run_recipe
    from wattwise.compress.recipe import Recipe
    from wattwise.compress.variant import save_variant

    recipe = Recipe.from_dict(
        {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": "onnxruntime"}
    )
    run = run_recipe(loaded(STACK), recipe, measure_steps=False, show_progress=False)
    variant = save_variant(run, recipe, tmp_path / "v", show_progress=False, profile=False)
    assert variant.module.path == tmp_path / "v" / "model.onnx"
    assert variant.module.weights_bytes() == (tmp_path / "v" / "model.onnx").stat().st_size
    assert variant.module.parameter_count() > 0


def test_execution_plan_runs_micro_batches_on_streams_and_reloads(tmp_path):
    # Micro-batches of 2 on two single-threaded sessions: same outputs as the eager model for
    # batches that split unevenly, that fit one micro-batch, and one sample; the plan is saved
    # and replayed on load, and the recipe says it needs wattwise's own runner.
    backend = {"name": "onnxruntime", "micro_batch": 2, "streams": 2}
    backend["disabled_optimizers"] = ["SkipLayerNormFusion"]
    variant = compress_and_reload(STACK, [], backend, tmp_path / "v")
    assert variant.manifest["backend_manifest"]["disabled_optimizers"] == ["SkipLayerNormFusion"]
    assert variant.manifest["backend_manifest"]["micro_batch"] == 2
    assert any(
        "execution plan: 2 streams × micro-batches of 2 samples" in n
        for n in variant.manifest["notes"]
    )
    assert "wattwise" in Recipe.from_dict(variant.manifest["recipe"]).libraries
    module = load_variant(tmp_path / "v", trust_code=True).module
    assert module.micro_batch == 2 and len(module.stream_sessions) == 2
    for batch in (1, 2, 7, 17):
        inputs = loaded(STACK).task.example_inputs(batch)
        expected = loaded(STACK).module(*inputs)
        torch.testing.assert_close(module(*inputs), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("backend", "complaint"),
    [
        ({"name": "eager", "micro_batch": 2}, "are onnxruntime options"),
        ({"name": "onnxruntime", "streams": 2}, "needs micro_batch"),
        ({"name": "eager", "disabled_optimizers": ["SkipLayerNormFusion"]}, "are onnxruntime"),
        ({"name": "onnxruntime", "micro_batch": 0}, "bad backend"),
    ],
)
def test_execution_plan_options_are_checked(backend, complaint):
    with pytest.raises(ConfigError, match=complaint):
        Recipe.from_dict({"steps": [], "backend": backend})


def test_token_micro_batches_hold_more_short_texts(tmp_path):
    compress_and_reload(STACK, [], "onnxruntime", tmp_path / "v")
    module = OnnxModule(
        tmp_path / "v" / "model.onnx", 2, "all", RunOptions(micro_batch_tokens=256, streams=2)
    )
    assert module.micro_batch_size((torch.zeros(32, 128, dtype=torch.int64),)) == 2
    assert module.micro_batch_size((torch.zeros(32, 32, dtype=torch.int64),)) == 8
    assert module.micro_batch_size((torch.zeros(32, 64),)) is None  # floats: no token count


def test_a_model_torchscript_cannot_export_falls_back_to_dynamo_with_a_note(tmp_path):
    # transformers' Llama masks use aten::diff, which the TorchScript exporter has no symbolic
    # for: the optimize search's "(torchscript export)" candidates all failed on a user Llama.
    from tests.compress.prune_helpers import run_steps, save_unprofiled
    from tests.models.lm_helpers import write_user_causal_lm
    from wattwise.models.registry import load_model

    directory = write_user_causal_lm(tmp_path / "llama", architecture="llama")
    steps = [{"quantize": {"method": "int8_dynamic"}}]
    backend = {"name": "onnxruntime", "exporter": "torchscript"}
    run = run_steps(load_model(str(directory)), steps, backend=backend)
    variant = save_unprofiled(run, steps, tmp_path / "v", backend=backend)
    assert variant.manifest["backend_manifest"]["exporter"] == "dynamo"
    assert any("TorchScript exporter failed" in note for note in variant.manifest["notes"])
    load_variant(tmp_path / "v", check_outputs=True)
