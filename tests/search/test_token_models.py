"""A GRU classifier on int64 token ids compresses and optimizes from an NPZ (issue 13, item 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import wattwise.api
from wattwise.compress.variant import load_variant
from wattwise.models.registry import ModelOptions

GRU = "tests.helpers:token_gru"
# The pruning candidate runs on the fp32 path, which the hardware probe never rules out; the
# int8 one may be left unstarted when the probe's one-Linear timing (a 16→3 head here) says so.
SPACE = """
families:
  - name: prune
    candidates:
      - {steps: [{prune: {method: unstructured, sparsity: 0.3}}], backend: eager}
  - name: int8
    candidates:
      - {steps: [{quantize: {method: int8_dynamic}}], backend: eager}
peers: false
"""


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "ids.npz"
    ids = np.random.default_rng(0).integers(0, 200, (100, 12)).astype(np.int64)
    np.savez(path, inputs=ids, labels=ids[:, 0] % 3)
    return str(path)


@pytest.mark.parametrize("backend", ["eager", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_gru_on_token_ids_compresses_and_its_variant_reloads(tmp_path, token_data, backend):
    recipe = {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": backend}
    variant = wattwise.api.compress(
        GRU,
        recipe,
        tmp_path / "variant",
        batch_sizes=(4,),
        show_progress=False,
        options=ModelOptions(data=token_data),
    )
    assert variant.profile.inputs.startswith("int64 tensor")
    reloaded = load_variant(tmp_path / "variant", check_outputs=True, trust_code=True)
    (ids,) = reloaded.task.example_inputs(4)
    assert ids.dtype == torch.int64
    assert reloaded.module(ids).shape == (4, 3)


@pytest.mark.slow
def test_int64_token_model_optimizes_from_an_npz(tmp_path, token_data):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    result = wattwise.api.optimize(
        GRU,
        budget="accuracy_drop<=0.05",
        objective="size",  # deterministic, so the choice does not ride on timing noise
        batch_size=8,
        space=str(space),
        out=tmp_path / "report",
        time_limit_s=240,  # an upper bound: the search ends when its candidates are done
        options=ModelOptions(data=token_data),
    )
    measured = [c for c in result.candidates if c.status == "measured"]
    tried = [(c.label, c.status, c.reason) for c in result.candidates]
    assert any(c.family == "prune" for c in measured), tried
    assert result.exit_code == 0 and result.chosen is not None  # a candidate or the original
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["baseline"]["profile"]["inputs"].startswith("int64 tensor")
    chosen = load_variant(result.chosen_variant, check_outputs=True, trust_code=True)
    assert chosen.task.example_inputs(2)[0].dtype == torch.int64
