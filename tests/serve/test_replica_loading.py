"""A model replica loads only what serving needs: the variant's weights and the tokenizer.

The replica class runs here without Ray (its `__init__` and forward are plain Python); the
source model's weight loaders are replaced by ones that fail, so a replica that reached for
the source model would fail these tests.
"""

from __future__ import annotations

import numpy
import pytest
import torch

from wattwise.compress.pipeline import compress, run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.compress.variant import open_model, outputs_match_probe, save_variant
from wattwise.models.registry import load_model
from wattwise.serve.replica import ModelReplica
from wattwise.serve.settings import ServeSettings
from wattwise.serve.signature import describe_model


def _forbid_source_weights(monkeypatch) -> None:
    """Any read of a source model's trained weights fails the test."""
    import transformers

    import wattwise.models.digits as digits

    def refuse(*_args, **_kwargs):
        raise AssertionError("the source model's weights were loaded")

    monkeypatch.setattr(digits, "load_digits_cnn", refuse)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)


def _replica(spec: str):
    """The replica class itself (no Ray), initialized as Ray Serve would."""
    settings = ServeSettings(model=spec, replicas=1, threads_per_replica=1).to_dict()
    signature = describe_model(open_model(spec, serving_only=True)).to_dict()
    return ModelReplica.func_or_class(settings, signature)


def test_digits_variant_replica_never_loads_the_source_model(tmp_path, monkeypatch):
    recipe = {"steps": [{"quantize": {"method": "int8_dynamic"}}], "backend": "eager"}
    variant = tmp_path / "digits-int8"
    compress("digits-cnn", recipe, variant, batch_sizes=(8,), measure_steps=False)
    full = open_model(str(variant))
    _forbid_source_weights(monkeypatch)
    served = open_model(str(variant), serving_only=True)
    outputs_match_probe(served, variant)  # bit-identical to compress time
    replica = _replica(str(variant))
    (images,) = full.task.example_inputs(5)
    grids = (images * 16).squeeze(1).tolist()
    predictions, _energy_j = replica._run(grids)
    with torch.inference_mode():
        expected = torch.softmax(full.module(images), dim=-1)
    assert [p["label"] for p in predictions] == expected.argmax(dim=-1).tolist()


@pytest.mark.slow
def test_minilm_variant_replica_never_loads_the_source_model(tmp_path, monkeypatch):
    minilm = load_model("minilm")
    recipe = Recipe.from_dict({"steps": [], "backend": "eager"})
    run = run_recipe(minilm, recipe, "cpu", 0, measure_steps=False, show_progress=False)
    variant = tmp_path / "minilm-eager"
    save_variant(run, recipe, variant, profile=False, show_progress=False)
    texts = ["energy per request", "a replica loads only what it serves"]
    with torch.inference_mode():
        expected = minilm.module(*minilm.task.tokenize(texts))
    del minilm, run
    _forbid_source_weights(monkeypatch)
    served = open_model(str(variant), serving_only=True)
    outputs_match_probe(served, variant)
    assert served.task.reference is None  # no frozen copy of the model either
    predictions, _energy_j = _replica(str(variant))._run(texts)
    embeddings = torch.from_numpy(numpy.stack([p["embedding"] for p in predictions])).float()
    assert torch.allclose(embeddings, expected, atol=1e-5)


def test_onnx_variant_replica_never_builds_the_source_architecture(tmp_path, monkeypatch):
    """model.onnx is the whole model: the replica reads the tokenizer, not the source's code."""
    import transformers

    from tests.compress.tiny_bert import tiny_bert_directory

    source = str(tiny_bert_directory(tmp_path))
    variant = tmp_path / "tiny-bert-onnx"
    compress(
        source,
        {"steps": [], "backend": "onnxruntime"},
        variant,
        batch_sizes=(2,),
        measure_steps=False,
    )
    texts = ["energy per request", "a replica loads only what it serves"]
    full = open_model(str(variant))
    with torch.inference_mode():
        expected = full.module(*full.task.tokenize(texts))

    def refuse(*_args, **_kwargs):
        raise AssertionError("the source architecture was built")

    _forbid_source_weights(monkeypatch)
    monkeypatch.setattr(transformers.AutoModel, "from_config", refuse)
    served = open_model(str(variant), serving_only=True)
    outputs_match_probe(served, variant)
    predictions, _energy_j = _replica(str(variant))._run(texts)
    embeddings = torch.from_numpy(numpy.stack([p["embedding"] for p in predictions])).float()
    assert torch.equal(embeddings, expected)
