"""The transformers-free BERT tokenizer a serving replica uses answers exactly as
transformers' fast tokenizer does, for every call the text task makes."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from tests.compress.tiny_bert import tiny_bert_directory
from wattwise.models.bert_tokenizer import (
    BertJsonTokenizer,
    bert_tokenizer_files,
    load_bert_json_tokenizer,
)
from wattwise.models.text_encoder import load_hf_tokenizer, minilm_directory
from wattwise.tasks.text import TextEncoderTask

TEXTS = [
    "energy per request",
    "A replica loads ONLY what it serves — naïve café, 東京, emoji 🙂.",
    "",
    "word " * 700,  # past the 512-token limit: truncated
    "tabs\tand\nnewlines   and  spaces",
]


@pytest.fixture(scope="module", params=["minilm", "tiny-bert"])
def directory(request, tmp_path_factory):
    if request.param == "minilm":
        return minilm_directory()
    return tiny_bert_directory(tmp_path_factory.mktemp("tok"))


@pytest.mark.parametrize(
    "options",
    [
        {"padding": True, "truncation": True, "max_length": 512, "return_tensors": "pt"},
        {"padding": "max_length", "truncation": True, "max_length": 128, "return_tensors": "pt"},
        {"truncation": True},
        {},
    ],
)
def test_same_ids_masks_and_types_as_transformers(directory, options):
    ours = BertJsonTokenizer(directory, bert_tokenizer_files(directory))
    theirs = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    assert ours.model_input_names == theirs.model_input_names
    for texts in (TEXTS, TEXTS[:1], TEXTS[1]):
        expected, got = theirs(texts, **options), ours(texts, **options)
        for name in theirs.model_input_names:
            if options.get("return_tensors") == "pt":
                assert torch.equal(got[name], expected[name]), name
            else:
                assert got[name] == expected[name], name


def test_the_text_task_feeds_a_model_the_same_tensors(directory):
    ours = TextEncoderTask(load_hf_tokenizer(directory), None)
    theirs = TextEncoderTask(AutoTokenizer.from_pretrained(directory, local_files_only=True), None)
    assert isinstance(ours.tokenizer, BertJsonTokenizer)
    for pad in (False, True):
        for a, b in zip(ours.tokenize(TEXTS, pad), theirs.tokenize(TEXTS, pad), strict=True):
            assert torch.equal(a, b)


def test_a_config_that_changes_the_normalizer_goes_through_transformers(tmp_path):
    directory = tiny_bert_directory(tmp_path)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["do_lower_case"] = False  # tokenizer.json lowercases; transformers would rebuild it
    config_file.write_text(json.dumps(config))
    assert load_bert_json_tokenizer(directory) is None


def test_other_tokenizers_go_through_transformers(tmp_path):
    directory = tiny_bert_directory(tmp_path)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "RobertaTokenizer"
    config_file.write_text(json.dumps(config))
    assert bert_tokenizer_files(directory) is None
    (directory / "tokenizer.json").unlink()
    config["tokenizer_class"] = "BertTokenizer"
    config_file.write_text(json.dumps(config))
    assert bert_tokenizer_files(directory) is None  # no tokenizer.json: transformers decides
    assert not isinstance(load_hf_tokenizer(directory), BertJsonTokenizer)


def test_a_broken_tokenizer_json_is_one_clear_error(tmp_path):
    from wattwise.errors import ModelLoadError

    directory = tiny_bert_directory(tmp_path)
    normalizer = json.loads((directory / "tokenizer.json").read_text())["normalizer"]
    (directory / "tokenizer.json").write_text(json.dumps({"normalizer": normalizer}))
    assert bert_tokenizer_files(directory) is not None  # looks like BERT, but cannot load
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer from"):
        load_hf_tokenizer(directory)
