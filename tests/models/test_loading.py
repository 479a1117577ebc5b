"""Every model source loads the same way and comes with a task that scores it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import wattwise
from tests.helpers import linear_stack
from wattwise.errors import ConfigError, DataError
from wattwise.measure.latency import QUICK_TIMING
from wattwise.models.registry import ModelOptions, load_model


def test_digits_cnn_is_cached_after_first_use():
    first = load_model("digits-cnn")
    second = load_model("digits-cnn")
    inputs = first.task.example_inputs(8)
    assert torch.equal(first.module(*inputs), second.module(*inputs))


def test_factory_with_weights_loads_them(tmp_path):
    model = linear_stack()
    with torch.no_grad():
        model[0].weight.mul_(2)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(
        "tests.helpers:linear_stack", ModelOptions(weights=str(path), input_shape="64")
    )
    assert torch.equal(loaded.module[0].weight, model[0].weight)


def _export_linear_stack(path):
    torch.onnx.export(
        linear_stack(),
        (torch.randn(2, 64),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )


def test_onnx_file_profiles(tmp_path):
    path = tmp_path / "stack.onnx"
    _export_linear_stack(path)
    profile = wattwise.profile(str(path), batch_sizes=(1, 8), timing=QUICK_TIMING)
    assert profile.kind == "onnx"
    assert profile.parameters == sum(p.numel() for p in linear_stack().parameters())
    assert profile.flops_per_sample is None  # never guessed for a foreign graph
    assert profile.quality["fidelity"] == pytest.approx(1.0)


def _labelled_arrays(count=60):
    generator = np.random.default_rng(0)
    inputs = generator.normal(size=(count, 64)).astype(np.float32)
    labels = generator.integers(0, 10, size=count)
    return inputs, labels


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".jsonl"])
def test_user_data_in_each_format(tmp_path, suffix):
    inputs, labels = _labelled_arrays()
    path = tmp_path / f"data{suffix}"
    if suffix == ".npz":
        np.savez(path, inputs=inputs, labels=labels)
    elif suffix == ".csv":
        header = ",".join([f"f{i}" for i in range(64)] + ["label"])
        rows = [
            ",".join(map(str, [*row, label])) for row, label in zip(inputs, labels, strict=True)
        ]
        path.write_text("\n".join([header, *rows]))
    else:
        path.write_text(
            "\n".join(
                json.dumps({"input": row.tolist(), "label": int(label)})
                for row, label in zip(inputs, labels, strict=True)
            )
        )
    loaded = load_model(
        "tests.helpers:linear_stack",
        ModelOptions(input_shape="64", data=str(path), metric="accuracy"),
    )
    quality = loaded.task.evaluate(loaded.module)
    assert 0.0 <= quality.metrics["accuracy"] <= 1.0
    assert quality.samples == 12  # 20% test split of 60


def test_user_data_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": [1, 2]}\nnot json\n')
    with pytest.raises(DataError, match="line 2"):
        load_model("tests.helpers:linear_stack", ModelOptions(input_shape="64", data=str(path)))
    with pytest.raises(ConfigError, match="--input-shape"):
        load_model("tests.helpers:linear_stack")


@pytest.mark.slow
def test_huggingface_directory_loads_as_text_encoder():
    from wattwise.models.text_encoder import minilm_directory

    loaded = load_model(str(minilm_directory()))
    assert loaded.kind == "huggingface"
    embeddings = loaded.module(*loaded.task.example_inputs(2))
    assert embeddings.shape == (2, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
