"""Causal language modelling on text built offline: held-out perplexity and next-token accuracy.

The text is every docstring paragraph of a fixed list of Python standard-library modules (the
same source as the MiniLM retrieval corpus, `tasks/corpus.py`), split by paragraph into seeded
train/val/test sets. Each split is tokenized, joined with the end-of-text token and cut into
blocks of `block_tokens`; a model reads a block and predicts each next token.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections.abc import Iterator
from functools import cache

import torch
import torch.nn.functional as F

from wattwise.tasks.base import (
    Forward,
    MetricSpec,
    ModelInputs,
    Quality,
    Task,
    TrainingBatch,
    check_split,
    cycled,
    endless_batches,
    proportion_ci95,
    sample_indices,
)
from wattwise.tasks.corpus import stdlib_docstrings

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
# Scoring every held-out block costs seconds per candidate; this many blocks (~16k tokens at
# 128 per block) keeps the next-token accuracy's 95% interval near ±0.8 points.
MAX_EVAL_BLOCKS = 128


@cache
def docstring_paragraphs(seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Deduplicated docstring paragraphs (doctests dropped), split by paragraph, seeded."""
    seen: set[str] = set()
    paragraphs = []
    for _, doc in stdlib_docstrings():
        for block in re.split(r"\n\s*\n", doc):
            text = " ".join(line.strip() for line in block.splitlines()).strip()
            if ">>>" in text or len(text) < 40 or text in seen:
                continue
            seen.add(text)
            paragraphs.append(text)
    paragraphs.sort()
    random.Random(seed).shuffle(paragraphs)
    n_train = int(len(paragraphs) * SPLIT_FRACTIONS["train"])
    n_val = int(len(paragraphs) * SPLIT_FRACTIONS["val"])
    return {
        "train": tuple(paragraphs[:n_train]),
        "val": tuple(paragraphs[n_train : n_train + n_val]),
        "test": tuple(paragraphs[n_train + n_val :]),
    }


def token_blocks(tokenizer, texts: tuple[str, ...], block_tokens: int) -> torch.Tensor:
    """Texts tokenized, joined by the end-of-text token, cut into (blocks, block_tokens)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for encoded in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(encoded)
        if eos is not None:
            stream.append(eos)
    count = len(stream) // block_tokens
    return torch.tensor(stream[: count * block_tokens], dtype=torch.long).view(count, block_tokens)


def next_token_loss(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each position's prediction of the following token."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1)
    )


def perplexity_ci95(perplexity: float, block_nll: list[float]) -> float:
    """Half-width of perplexity's 95% interval (delta method, blocks as the sampling units:
    tokens within a block are not independent); NaN with fewer than 2 blocks."""
    if len(block_nll) < 2:
        return float("nan")
    return perplexity * 1.96 * statistics.stdev(block_nll) / math.sqrt(len(block_nll))


class CausalLMTask(Task):
    """Perplexity (lower is better) and next-token accuracy on held-out docstring text.

    Inputs are one tensor, `input_ids` of shape (batch, block_tokens); the model returns logits
    (batch, block_tokens, vocabulary).
    """

    name = "causal-lm"
    metrics = (
        MetricSpec("perplexity", higher_is_better=False, unit="perplexity"),
        MetricSpec("next_token_accuracy"),
    )
    output_kind = "logits"

    def __init__(self, tokenizer, block_tokens: int = 128, seed: int = 0) -> None:
        self.tokenizer = tokenizer
        self.block_tokens = block_tokens
        self.seed = seed
        texts = docstring_paragraphs(seed)
        self.blocks = {
            split: token_blocks(tokenizer, texts[split], block_tokens) for split in texts
        }
        # A labelled task for `finetune`: the targets are the inputs shifted by one.
        self.labels = self.blocks["train"]

    def describe_inputs(self) -> str:
        return f"input_ids (batch, {self.block_tokens} tokens of stdlib docstring text)"

    def split_size(self, split: str) -> int:
        check_split(split)
        return self.blocks[split].shape[0]

    def example_inputs(self, batch_size: int, split: str = "test") -> ModelInputs:
        check_split(split)
        return (cycled(self.blocks[split], batch_size),)

    def prompts(self, count: int, prompt_tokens: int, split: str = "test") -> list[torch.Tensor]:
        """`count` prompts of `prompt_tokens` tokens (block starts), each of shape (1, n)."""
        blocks = cycled(self.blocks[split], count)
        return [blocks[i : i + 1, :prompt_tokens].clone() for i in range(count)]

    def evaluate(self, forward: Forward, split: str = "test", batch_size: int = 16) -> Quality:
        check_split(split)
        blocks = self.blocks[split][:MAX_EVAL_BLOCKS]
        block_nll, correct, count = [], 0, 0
        with torch.inference_mode():
            for start in range(0, blocks.shape[0], batch_size):
                ids = blocks[start : start + batch_size]
                logits = forward(ids).float()
                predicted, target = logits[:, :-1], ids[:, 1:]
                nll = F.cross_entropy(predicted.transpose(1, 2), target, reduction="none")
                block_nll += nll.mean(dim=1).tolist()
                correct += int((predicted.argmax(-1) == target).sum())
                count += target.numel()
        accuracy = correct / max(count, 1)
        perplexity = math.exp(sum(block_nll) / max(len(block_nll), 1))
        return Quality(
            {"perplexity": perplexity, "next_token_accuracy": accuracy},
            split,
            count,
            {
                "next_token_accuracy": proportion_ci95(accuracy, count),
                "perplexity": perplexity_ci95(perplexity, block_nll),
            },
        )

    def training_batches(
        self, batch_size: int, seed: int = 0, sample: float | int | None = None
    ) -> Iterator[TrainingBatch]:
        train = self.blocks["train"]
        subset = sample_indices(train.shape[0], sample, seed) if sample is not None else None
        for indices in endless_batches(train.shape[0], batch_size, seed, subset):
            ids = train[indices]
            yield TrainingBatch((ids,), ids)

    def supervised_loss(self, model, batch: TrainingBatch) -> torch.Tensor:
        """Next-token cross-entropy of `model` on the batch (targets are the inputs)."""
        return next_token_loss(model(*batch.inputs), batch.inputs[0])
