"""A 2-layer BERT sentence encoder saved as a Hugging Face directory (MiniLM's tokenizer), so
recipe tests run the real text-encoder path in seconds instead of on full MiniLM."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import torch

from wattwise.models.registry import LoadedModel, load_model

OUTLIER_CHANNELS, OUTLIER_BIAS = 4, 20.0
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def tiny_bert_directory(root: Path, classes: int = 0) -> Path:
    """Write a seeded 2-layer, 4-head, 64-wide BERT with MiniLM's tokenizer under `root`.

    Loaded through `AutoModel` it gets a (randomly initialized, unused) pooler: 13 Linears.
    With `classes`, a `BertForSequenceClassification` with that many labels instead.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    from wattwise.models.text_encoder import minilm_directory

    directory = Path(root) / ("tiny-bert" if not classes else f"tiny-bert-{classes}-classes")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
    )
    if classes:
        config.num_labels = classes
        classifier = BertForSequenceClassification(config).eval()
        model, encoder = classifier, classifier.bert
    else:
        model = encoder = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        # Trained BERTs have a few FFN channels with outlier activations (what makes per-tensor
        # int8 lose fidelity); a random init has none, so four channels per layer get them.
        for layer in encoder.encoder.layer:
            layer.intermediate.dense.bias[:OUTLIER_CHANNELS] += OUTLIER_BIAS
    model.save_pretrained(directory)
    for name in TOKENIZER_FILES:
        if (minilm_directory() / name).is_file():
            shutil.copy(minilm_directory() / name, directory / name)
    return directory


@cache
def tiny_bert(root: str) -> LoadedModel:
    """The tiny BERT loaded as wattwise loads any Hugging Face directory (once per root)."""
    return load_model(str(tiny_bert_directory(Path(root))))
