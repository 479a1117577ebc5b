"""Unstructured magnitude pruning: exact sparsity, permanent, honest about speed and size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.compress.prune_helpers import run_steps, save_unprofiled
from wattwise.compress.steps.prune import mask_2_4, sparse_storage_bytes
from wattwise.compress.variant import load_variant
from wattwise.errors import ConfigError, UnsupportedOnDeviceError
from wattwise.models.registry import load_model


@pytest.fixture(scope="module")
def digits():
    return load_model("digits-cnn")


def _pruned_weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_global_unstructured_sparsity_is_exact_and_permanent(digits, tmp_path):
    steps = [{"prune": {"method": "unstructured", "sparsity": 0.6}}]
    run = run_steps(digits, steps)
    weights = _pruned_weights(run.module)
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.6 * total)
    # permanent: no masks or re-parametrisations left behind, plain weights in the state dict
    assert not any(name.endswith(("_orig", "_mask")) for name in run.module.state_dict())
    (report,) = run.reports
    assert report.metrics["sparsity"] == pytest.approx(zeros / total)
    save_unprofiled(run, steps, tmp_path / "v")
    reloaded = load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
    assert sum(int((w == 0).sum()) for w in _pruned_weights(reloaded.module)) == zeros


def test_layer_scope_gives_every_layer_the_same_sparsity(digits):
    run = run_steps(
        digits, [{"prune": {"method": "unstructured", "sparsity": 0.3, "scope": "layer"}}]
    )
    for weight in _pruned_weights(run.module):
        assert int((weight == 0).sum()) == round(0.3 * weight.numel())


def test_notes_state_sparse_size_and_that_dense_kernels_gain_no_speed(digits):
    run = run_steps(digits, [{"prune": {"method": "unstructured", "sparsity": 0.8}}])
    (report,) = run.reports
    assert any("dense kernels gain no speed" in note for note in report.notes)
    assert any("stored sparse" in note for note in report.notes)
    metrics = report.metrics
    assert metrics["sparse_weight_bytes"] < 0.5 * metrics["dense_weight_bytes"]
    assert metrics["sparse_weight_bytes"] == min(
        metrics["sparse_weight_bytes"], metrics["csr_weight_bytes"], metrics["bitmask_weight_bytes"]
    )


def test_sparse_storage_bytes_counts_values_indices_and_bitmask():
    weight = torch.zeros(4, 8)
    weight[0, :3] = 1.0  # 3 nonzeros
    sizes = sparse_storage_bytes(weight)
    assert sizes["dense"] == 4 * 8 * 4
    assert sizes["csr"] == 3 * (4 + 2) + 5 * 4  # values + int16 columns, int32 row pointers
    assert sizes["bitmask"] == 4 + 3 * 4


def test_layer_selection_matching_nothing_is_a_config_error(digits):
    steps = [{"prune": {"method": "unstructured", "layers": {"include": ["no.such.layer"]}}}]
    with pytest.raises(ConfigError, match="no Linear or Conv layer matches"):
        run_steps(digits, steps)


def test_2_4_mask_keeps_two_largest_of_every_four():
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, 0.0, -1.0, 0.2]])
    mask = mask_2_4(weight)
    assert mask.tolist() == [[False, True, True, False, True, False, True, False]]


def test_2_4_on_cpu_says_it_needs_cuda(digits):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UnsupportedOnDeviceError, match="needs CUDA"):
        run_steps(digits, [{"prune": {"method": "semi_structured_2_4"}}])


@pytest.mark.gpu
def test_2_4_on_cuda_halves_weights_and_reloads_identically(tmp_path):
    from wattwise.compress.pipeline import run_recipe
    from wattwise.compress.recipe import Recipe

    torch.manual_seed(0)
    loaded = load_model("minilm")
    steps = [{"prune": {"method": "semi_structured_2_4"}}]
    recipe = Recipe.from_dict({"steps": steps, "backend": "eager"})
    run = run_recipe(loaded, recipe, device="cuda", measure_steps=False, show_progress=False)
    (report,) = run.reports
    assert report.metrics["sparse_layers"] > 0
    quality = loaded.task.evaluate(run.module, "val")
    assert quality.metrics["recall@10"] > 0.3  # a working encoder, before any distillation
    save_unprofiled(run, steps, tmp_path / "v")
    load_variant(tmp_path / "v", check_outputs=True, trust_code=True)
