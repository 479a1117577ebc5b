"""A Hugging Face sequence classifier loads as a classifier: its head kept, scored on its logits
(fidelity, agreement), compressed and served with classes, not as a sentence encoder."""

from __future__ import annotations

import json

import torch

from tests.compress.prune_helpers import run_steps, save_unprofiled
from tests.compress.tiny_bert import tiny_bert_directory
from wattwise.compress.variant import load_variant, open_model
from wattwise.models.registry import load_model
from wattwise.models.text_encoder import TextClassifier
from wattwise.serve.signature import describe_model, encode_outputs

NAMES = ("negative", "neutral", "positive")


def _named_classifier(root):
    """The tiny 3-class BERT classifier with named classes (a trained one's id2label)."""
    directory = tiny_bert_directory(root, classes=3)
    config = json.loads((directory / "config.json").read_text())
    config["id2label"] = dict(enumerate(NAMES))
    config["label2id"] = {name: index for index, name in enumerate(NAMES)}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_a_sequence_classifier_keeps_its_head_and_is_scored_on_its_classes(tmp_path):
    directory = _named_classifier(tmp_path)
    loaded = load_model(str(directory))
    assert isinstance(loaded.module, TextClassifier)
    inputs = loaded.task.example_inputs(4, "val")
    with torch.inference_mode():
        logits = loaded.module(*inputs)
    assert logits.shape == (4, 3)
    quality = loaded.task.evaluate(loaded.module, "val")
    assert quality.metrics == {"fidelity": 1.0, "agreement": 1.0}
    signature = describe_model(loaded)
    assert signature.input_kind == "text" and signature.output_kind == "classes"
    prediction = encode_outputs(signature, logits)[0]
    assert prediction["label_name"] == NAMES[prediction["label"]]


def test_an_int8_classifier_variant_reloads_and_serves_classes(tmp_path):
    directory = _named_classifier(tmp_path)
    loaded = load_model(str(directory))
    steps = [{"quantize": {"method": "int8_dynamic"}}]
    run = run_steps(loaded, steps, backend="onnxruntime")
    quality = loaded.task.evaluate(run.module, "val")
    assert quality.metrics["agreement"] > 0.9 and quality.metrics["fidelity"] > 0.99
    save_unprofiled(run, steps, tmp_path / "v", backend="onnxruntime")
    load_variant(tmp_path / "v", check_outputs=True)
    serving = open_model(str(tmp_path / "v"), serving_only=True)
    signature = describe_model(serving)
    assert signature.output_kind == "classes" and signature.class_names == NAMES


def test_a_single_output_head_is_served_as_its_value_not_as_one_class(tmp_path):
    directory = tiny_bert_directory(tmp_path, classes=1)
    loaded = load_model(str(directory))
    signature = describe_model(loaded)
    assert signature.output_kind == "values" and signature.class_names == ()
    with torch.inference_mode():
        scores = loaded.module(*loaded.task.example_inputs(2, "val"))
    assert set(encode_outputs(signature, scores)[0]) == {"output"}
