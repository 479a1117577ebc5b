"""Text-encoder task: fidelity to the original embeddings and retrieval recall@10.

Corpus: standard-library docstring paragraphs (see `corpus.py`), fixed seeded splits of 256
passages for "val" and "test", the rest for "train". Profiling inputs are padded to
`sequence_length` tokens (128 by default) so figures compare across variants.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import torch
import torch.nn.functional as F

from wattwise.errors import ConfigError
from wattwise.tasks.base import (
    Forward,
    MetricSpec,
    ModelInputs,
    Quality,
    RequestFormat,
    Task,
    TrainingBatch,
    check_split,
    endless_batches,
    mean_ci95,
    proportion_ci95,
    sample_indices,
)
from wattwise.tasks.corpus import Passage, build_corpus

EVAL_SIZE = 256
EVAL_BATCH = 32
MAX_TOKENS = 128
# Joined passages per profiling input: passages are ≥80 characters, so 12 of them give well
# over 128 tokens: every profiling input is full length, with no padding.
PASSAGES_PER_INPUT = 12
REQUEST_EXAMPLE = "Smaller models cost less energy per request."


class TextEncoderTask(Task):
    """Scores a sentence encoder against the original model (`reference`)."""

    name = "text-retrieval"
    metrics = (
        MetricSpec("fidelity", True, "mean cosine to the original's embeddings"),
        MetricSpec("recall@10", True),
    )
    output_kind = "embeddings"

    def __init__(
        self, tokenizer, reference: Forward | None, sequence_length: int = MAX_TOKENS, seed: int = 0
    ):
        self.tokenizer = tokenizer
        self.reference = reference
        self.sequence_length = sequence_length
        self.seed = seed
        self._reference_embeddings: dict[str, torch.Tensor] = {}

    @cached_property
    def corpus(self) -> dict[str, list[Passage]]:
        passages = build_corpus(self.seed)
        return {
            "val": passages[:EVAL_SIZE],
            "test": passages[EVAL_SIZE : 2 * EVAL_SIZE],
            "train": passages[2 * EVAL_SIZE :],
        }

    @cached_property
    def train_texts(self) -> list[str]:
        return [text for p in self.corpus["train"] for text in (p.text, p.query)]

    def split_size(self, split: str) -> int:
        check_split(split)
        return len(self.corpus[split])

    def tokenize(self, texts: list[str], pad_to_length: bool = False) -> ModelInputs:
        """Tokenizer tensors in the model's input order."""
        encoded = self.tokenizer(
            texts,
            padding="max_length" if pad_to_length else True,
            truncation=True,
            max_length=self.sequence_length if pad_to_length else MAX_TOKENS,
            return_tensors="pt",
        )
        names = [
            n
            for n in self.tokenizer.model_input_names
            if n in ("input_ids", "attention_mask", "token_type_ids")
        ]
        return tuple(encoded[name] for name in names)

    def example_inputs(self, batch_size: int, split: str = "test") -> ModelInputs:
        """Inputs of exactly `sequence_length` real tokens (no padding): consecutive passages
        of the split joined, then truncated. Padding would let a variant that skips it look
        faster than it is."""
        check_split(split)
        passages = self.corpus[split]
        texts = [
            " ".join(passages[(i + k) % len(passages)].text for k in range(PASSAGES_PER_INPUT))
            for i in range(batch_size)
        ]
        return self.tokenize(texts, pad_to_length=True)

    def request_format(self) -> RequestFormat:
        """Clients send strings."""
        return RequestFormat(REQUEST_EXAMPLE)

    def describe_inputs(self) -> str:
        return f"texts of {self.sequence_length} tokens (corpus passages joined and truncated)"

    def corpus_batches(self, batch_size: int, split: str = "val") -> list[ModelInputs]:
        """The split's passages and queries, sorted by token count, in batches padded to their
        longest: length-sorted dynamic batching, the way a batch job or server would run."""
        texts = self._split_texts(split)
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"]]
        ordered = [text for _, text in sorted(zip(lengths, texts, strict=True))]
        return [
            self.tokenize(ordered[start : start + batch_size])
            for start in range(0, len(ordered), batch_size)
        ]

    def embed(self, forward: Forward, texts: list[str]) -> torch.Tensor:
        """Embeddings of `texts` (in their order), computed in length-sorted batches of 32
        padded to the longest in each batch: 2.5x less work than unsorted batches on the
        corpus's mix of short queries and long passages."""
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"]]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(order), EVAL_BATCH):
                batch = [texts[i] for i in order[start : start + EVAL_BATCH]]
                chunks.append(forward(*self.tokenize(batch)).float())
        if not chunks:
            return torch.empty(0)
        in_length_order = torch.cat(chunks)
        embeddings = torch.empty_like(in_length_order)
        embeddings[torch.tensor(order)] = in_length_order
        return embeddings

    def _split_texts(self, split: str) -> list[str]:
        passages = self.corpus[split]
        return [p.text for p in passages] + [p.query for p in passages]

    def reference_embeddings(self, split: str) -> torch.Tensor:
        """The original model's embeddings of a split's passages then queries (computed once)."""
        if self.reference is None:
            raise ConfigError(
                "this text model was loaded for serving only (no reference model): load it "
                "with load_model(spec) to score its quality"
            )
        if split not in self._reference_embeddings:
            self._reference_embeddings[split] = self.embed(self.reference, self._split_texts(split))
        return self._reference_embeddings[split]

    def outputs_and_reference(
        self, forward: Forward, split: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward`'s outputs for a split's passages then queries, and the original's."""
        check_split(split)
        reference = self.reference_embeddings(split)
        # Scoring the original itself: its outputs are the reference, computed once.
        if forward is self.reference:
            return reference, reference
        return self.embed(forward, self._split_texts(split)), reference

    def evaluate(self, forward: Forward, split: str = "test") -> Quality:
        embeddings, reference = self.outputs_and_reference(forward, split)
        cosines = F.cosine_similarity(embeddings, reference, dim=1)
        count = len(self.corpus[split])
        recall = _recall_at_10(embeddings, count)
        return Quality(
            {"fidelity": float(cosines.mean()), "recall@10": recall},
            split,
            count,
            {"fidelity": mean_ci95(cosines), "recall@10": proportion_ci95(recall, count)},
        )

    def recall_at_10(self, forward: Forward, split: str = "test") -> float:
        """Recall@10 alone (no reference model needed): the share of a split's queries whose
        own passage is among the 10 passages nearest to them."""
        check_split(split)
        embeddings = self.embed(forward, self._split_texts(split))
        return _recall_at_10(embeddings, len(self.corpus[split]))

    def training_batches(
        self, batch_size: int, seed: int = 0, sample: float | int | None = None
    ) -> Iterator[TrainingBatch]:
        texts = self.train_texts
        subset = sample_indices(len(texts), sample, seed) if sample is not None else None
        for batch in endless_batches(len(texts), batch_size, seed, subset):
            yield TrainingBatch(self.tokenize([texts[i] for i in batch.tolist()]), None)


def _recall_at_10(embeddings: torch.Tensor, count: int) -> float:
    """Passages then queries (`count` each): the share of queries whose passage is in their
    10 nearest passages by cosine."""
    passages = F.normalize(embeddings[:count], dim=1)
    queries = F.normalize(embeddings[count:], dim=1)
    top10 = (queries @ passages.T).topk(min(10, count), dim=1).indices
    hits = (top10 == torch.arange(count).unsqueeze(1)).any(dim=1).float()
    return float(hits.mean())
