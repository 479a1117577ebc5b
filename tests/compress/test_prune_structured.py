"""Structured pruning: a smaller dense model that is really faster and reloads from records."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.cli.run_cli import REPO, assert_one_line_error, run_in_process
from tests.compress.prune_helpers import interleaved_latency_ms, run_steps, save_unprofiled
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import load_variant
from wattwise.errors import ConfigError
from wattwise.models.registry import LoadedModel, load_model
from wattwise.tasks.arrays import ArrayTask


@pytest.fixture(scope="module")
def digits():
    return load_model("digits-cnn")


def test_half_structured_pruning_gives_fewer_parameters_and_lower_batch64_latency(digits):
    run = run_steps(digits, [{"prune": {"method": "structured", "sparsity": 0.5}}])
    original, pruned = digits.module, run.module
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(pruned) < 0.5 * count(original)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert pruned.classifier[-1].out_features == 10  # output width kept
    inputs = digits.task.example_inputs(64, "val")
    original_ms, pruned_ms = interleaved_latency_ms(original, pruned, inputs)
    assert pruned_ms < original_ms, (original_ms, pruned_ms)


def test_structured_variant_reloads_identically_without_torch_pruning(digits, tmp_path):
    steps = [{"prune": {"method": "structured", "sparsity": 0.4, "importance": "l1"}}]
    run = run_steps(digits, steps)
    save_unprofiled(run, steps, tmp_path / "v")
    reloaded = load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
    assert [p.shape for p in reloaded.module.parameters()] == [
        p.shape for p in run.module.parameters()
    ]
    # A fresh process rebuilds the variant from its records alone: torch-pruning stays unloaded.
    script = (
        "import sys, wattwise.compress.variant as v; "
        f"v.load_variant({str(tmp_path / 'v')!r}, check_outputs=True, trust_code=True); "
        "print('torch_pruning' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_taylor_importance_and_iterations_prune_to_the_same_widths(digits):
    steps = [
        {
            "prune": {
                "method": "structured",
                "sparsity": 0.5,
                "importance": "taylor",
                "iterations": 2,
            }
        }
    ]
    run = run_steps(digits, steps)
    convs = [m for m in run.module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert digits.task.evaluate(run.module, "val").metrics["accuracy"] > 0.3


def test_ignore_keeps_named_layers_widths(digits):
    steps = [{"prune": {"method": "structured", "sparsity": 0.5, "ignore": ["features.0"]}}]
    run = run_steps(digits, steps)
    convs = [m for m in run.module.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 32 and convs[1].in_channels == 32
    assert convs[1].out_channels == 32


def _opaque_model() -> LoadedModel:
    from tests.compress.prune_models import opaque_net

    features = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    task = ArrayTask("random", features, labels, "accuracy")
    return LoadedModel("opaque", opaque_net(), task, "factory", {"spec": "opaque"})


def test_untraceable_layer_is_named_with_ignore_suggested():
    with pytest.raises(ConfigError) as raised:
        run_steps(_opaque_model(), [{"prune": {"method": "structured", "sparsity": 0.5}}])
    message = str(raised.value)
    assert "cannot trace" in message and "2.linear" in message and "ignore:" in message
    assert "\n" not in message


def test_ignoring_the_untraceable_layers_lets_the_rest_be_pruned():
    steps = [{"prune": {"method": "structured", "sparsity": 0.5, "ignore": ["0", "2"]}}]
    run = run_steps(_opaque_model(), steps)
    assert run.module[3].out_features == 16 and run.module[5].in_features == 16
    assert run.module[2].linear.out_features == 32
    assert run.module(torch.randn(2, 64)).shape == (2, 10)


def test_sparsity_outside_range_is_one_line_exit_2_and_writes_nothing(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - prune: {method: structured, sparsity: 1.0}\n")
    out = tmp_path / "out"
    done = run_in_process("compress", "digits-cnn", "-r", str(recipe), "-o", str(out))
    assert_one_line_error(done, "sparsity", "[0, 1)")
    assert not out.exists()


@pytest.mark.parametrize("method", ["unstructured", "structured"])
@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_zero_to_one_is_rejected(method, sparsity):
    with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
        Recipe.from_dict({"steps": [{"prune": {"method": method, "sparsity": sparsity}}]})


def test_untraceable_layer_from_the_cli_is_one_line_exit_2(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("steps:\n  - prune: {method: structured, sparsity: 0.5}\n")
    out = tmp_path / "out"
    done = run_in_process(
        "compress",
        "tests.compress.prune_models:opaque_net",
        "--input-shape",
        "64",
        "-r",
        str(recipe),
        "-o",
        str(out),
    )
    assert_one_line_error(done, "cannot trace", "2.linear", "ignore:")
    assert not out.exists()


@pytest.mark.slow
def test_minilm_prunes_heads_and_mlp_but_keeps_384_wide_embeddings(tmp_path):
    loaded = load_model("minilm")
    steps = [{"prune": {"method": "structured", "sparsity": 0.5}}]
    run = run_steps(loaded, steps)
    layer = run.module.transformer.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 6
    assert layer.attention.self.query.out_features == 6 * 32
    assert layer.intermediate.dense.out_features == 768
    assert layer.output.dense.out_features == 384
    inputs = loaded.task.example_inputs(4, "val")
    with torch.inference_mode():
        embeddings = run.module(*inputs)
    assert embeddings.shape == (4, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-4)
    save_unprofiled(run, steps, tmp_path / "v")
    load_variant(tmp_path / "v", check_outputs=True, trust_code=True)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_causal_lms_lose_mlp_width_and_keep_their_attention_projections(architecture, tmp_path):
    # GPT-2's fused c_attn and Llama's grouped q/k/v/o split heads by reshapes torch-pruning
    # does not see: they stay whole (GPT-2's used to be cut mid-head: an IndexError inside
    # torch-pruning; Llama's RMSNorm was reported untraceable). The MLP width still shrinks.
    from tests.models.lm_helpers import write_user_causal_lm

    directory = write_user_causal_lm(tmp_path / architecture, architecture=architecture)
    loaded = load_model(str(directory))
    attention_before = {
        name: tuple(layer.weight.shape)
        for name, layer in loaded.module.named_modules()
        if ".attn." in name or ".self_attn." in name
        if isinstance(layer, nn.Linear)
    }
    steps = [{"prune": {"method": "structured", "sparsity": 0.5}}]
    run = run_steps(loaded, steps)
    layers = dict(run.module.named_modules())
    assert attention_before and all(
        tuple(layers[name].weight.shape) == shape for name, shape in attention_before.items()
    )
    report = run.reports[0]
    assert report.metrics["parameters_after"] < report.metrics["parameters_before"]
    assert any("attention projections kept whole" in note for note in run.notes)
    ids = loaded.task.example_inputs(2, "val")
    with torch.inference_mode():
        assert run.module(*ids).shape == loaded.module(*ids).shape
    save_unprofiled(run, steps, tmp_path / "v")
    load_variant(tmp_path / "v", check_outputs=True, trust_code=True)


def test_a_model_whose_own_class_says_attention_is_still_pruned():
    # Only attention blocks inside a model keep their projections, never the model itself.
    from wattwise.compress.steps.prune_structured import kept_attention_layers

    class MyAttentionNet(nn.Sequential):
        pass

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 8)

    model = MyAttentionNet(nn.Linear(8, 8), SelfAttention())
    assert kept_attention_layers(model, {}) == ("1.qkv", "1.out")
