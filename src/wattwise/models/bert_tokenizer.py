"""A BERT-family tokenizer straight from `tokenizer.json`, without importing transformers.

Why our own: a serving replica of an ONNX variant needs only the tokenizer, and importing the
transformers package took 1.0 s of a replica's 2.6 s start (idle; ~2.5 s on two cores under
load), while the `tokenizers` library, which transformers' fast tokenizers wrap, loads the same
`tokenizer.json` in 20 ms. transformers' `PreTrainedTokenizerFast.__call__` sets truncation
and padding on that same backend object and calls `encode_batch`, which this class does for
the calls `TextEncoderTask` makes. Only for directories whose `tokenizer_config.json` names a
BERT tokenizer (MiniLM, BGE, E5 and other BERT sentence encoders), whose input names and
right padding are fixed; everything else goes through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

BERT_CLASSES = ("BertTokenizer", "BertTokenizerFast")
BERT_INPUT_NAMES = ["input_ids", "token_type_ids", "attention_mask"]


def bert_tokenizer_files(directory: Path) -> dict[str, Any] | None:
    """The directory's tokenizer config when it names a BERT tokenizer and a tokenizer.json
    exists (whether the file's normalizer agrees is checked once it is loaded)."""
    config_file, tokenizer_file = directory / "tokenizer_config.json", directory / "tokenizer.json"
    if not (config_file.is_file() and tokenizer_file.is_file()):
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or config.get("tokenizer_class") not in BERT_CLASSES:
        return None
    if config.get("padding_side", "right") != "right" or "model_input_names" in config:
        return None
    pad = config.get("pad_token", "[PAD]")
    if not isinstance(pad, str) or not isinstance(config.get("model_max_length", 512), int):
        return None
    return config


def load_bert_json_tokenizer(directory: Path) -> BertJsonTokenizer | None:
    """The directory's BERT tokenizer read from tokenizer.json, or None when transformers must
    load it (not a BERT tokenizer, or a config that changes the file's normalizer). A
    tokenizer.json that cannot be read raises the `tokenizers` library's error."""
    config = bert_tokenizer_files(directory)
    if config is None:
        return None
    tokenizer = BertJsonTokenizer(directory, config)
    return tokenizer if _normalizer_agrees(tokenizer.backend, config) else None


def _normalizer_agrees(backend: Any, config: dict[str, Any]) -> bool:
    """Whether the loaded tokenizer's normalizer already does what tokenizer_config.json asks:
    transformers' BERT tokenizer rebuilds the normalizer when they differ; this class cannot."""
    normalizer = json.loads(backend.normalizer.__getstate__()) if backend.normalizer else {}
    if normalizer.get("type") != "BertNormalizer":
        return False
    return (
        normalizer.get("lowercase") == config.get("do_lower_case", True)
        and normalizer.get("strip_accents") == config.get("strip_accents")
        and normalizer.get("handle_chinese_chars") == config.get("tokenize_chinese_chars", True)
    )


class BertJsonTokenizer:
    """`tokenizer(texts, padding=, truncation=, max_length=, return_tensors=)` as transformers'
    fast BERT tokenizer answers it, for one text or a list of single texts."""

    model_input_names = BERT_INPUT_NAMES

    def __init__(self, directory: Path, config: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.model_max_length = config.get("model_max_length", 512)
        self.pad_token = config.get("pad_token", "[PAD]")
        self.pad_token_id = self.backend.token_to_id(self.pad_token)
        if self.pad_token_id is None:
            raise ValueError(f"pad token {self.pad_token!r} is not in the vocabulary")

    def __call__(
        self,
        texts: str | list[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> dict[str, Any]:
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        limit = max_length if max_length is not None else self.model_max_length
        if truncation:
            self.backend.enable_truncation(limit)
        else:
            self.backend.no_truncation()
        if padding == "max_length":
            self.backend.enable_padding(
                pad_id=self.pad_token_id, pad_token=self.pad_token, length=limit
            )
        elif padding in (True, "longest"):
            self.backend.enable_padding(pad_id=self.pad_token_id, pad_token=self.pad_token)
        else:
            self.backend.no_padding()
        encodings = self.backend.encode_batch(batch, add_special_tokens=add_special_tokens)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_tensors == "pt":
            return {name: torch.tensor(rows, dtype=torch.long) for name, rows in columns.items()}
        if single:
            return {name: rows[0] for name, rows in columns.items()}
        return columns
