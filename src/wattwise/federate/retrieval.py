"""MiniLM fine-tuning, federated: each client holds passage/query pairs of the retrieval task's
train split and trains with in-batch negatives; the server scores recall@10 on the test split.

The retrieval task (`tasks/text.py`) pairs every corpus passage with a query made from it. A
client's file holds only its own pairs (`client-<i>.npz`: `passages`, `queries`, as text).
The loss is sentence-transformers' MultipleNegativesRankingLoss (Henderson et al., 2017): for
a batch of pairs, cross-entropy of each query against every passage of the batch, the cosine
similarities scaled by 20, its own passage being the right answer. It trains what recall@10
measures, where distilling towards the original model (the compress `finetune` step's loss
for encoders) would start at zero loss and move nothing.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wattwise.errors import DataError
from wattwise.federate.training import LocalTraining, train_steps
from wattwise.paths import atomic_write_bytes
from wattwise.tasks.text import TextEncoderTask

# sentence-transformers' MultipleNegativesRankingLoss default: cosine similarities × 20.
SIMILARITY_SCALE = 20.0
# AdamW's rate for a pre-trained encoder: 1e-4 is the usual ceiling for BERT-size fine-tuning
# (Devlin et al., 2019 used 2e-5 to 5e-5 for full fine-tuning); few local steps use the top.
LEARNING_RATE = 1e-4


def minilm_encoder() -> nn.Module:
    """The pre-trained all-MiniLM-L6-v2 encoder (the same weights in every process)."""
    from wattwise.models.text_encoder import load_hf_encoder, minilm_directory

    return load_hf_encoder(minilm_directory())[0]


def minilm_tokenizer():
    """MiniLM's tokenizer, without loading the model's weights."""
    from transformers import AutoTokenizer

    from wattwise.models.text_encoder import minilm_directory

    return AutoTokenizer.from_pretrained(minilm_directory(), local_files_only=True)


def retrieval_task(seed: int = 0) -> TextEncoderTask:
    """The retrieval task's splits (no reference model: federated runs score recall only)."""
    return TextEncoderTask(minilm_tokenizer(), None, seed=seed)


def recall_on(model: nn.Module, task: TextEncoderTask, split: str = "test") -> float:
    """Recall@10 (fraction) of the model's embeddings on one split of the retrieval task."""
    model.eval()
    return task.recall_at_10(model, split)


def write_pair_parts(
    task: TextEncoderTask, positions: list[np.ndarray], directory: Path
) -> list[Path]:
    """One `client-<i>.npz` per client: the train split's pairs at that client's positions."""
    train = task.corpus["train"]
    paths = []
    for client, rows in enumerate(positions):
        buffer = io.BytesIO()
        np.savez(
            buffer,
            passages=np.array([train[i].text for i in rows], dtype=str),
            queries=np.array([train[i].query for i in rows], dtype=str),
        )
        path = Path(directory) / f"client-{client}.npz"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


@dataclass(frozen=True)
class TextPairs:
    """A retrieval client's samples: passages and the query made from each."""

    passages: list[str]
    queries: list[str]
    task: TextEncoderTask

    @staticmethod
    def read(path: Path) -> TextPairs:
        """A client's own pairs file (.npz with `passages` and `queries`)."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"client data {path} not found; give the file this client trains on")
        try:
            with np.load(path, allow_pickle=False) as data:
                passages, queries = data["passages"].tolist(), data["queries"].tolist()
        except (KeyError, ValueError, OSError) as error:
            raise DataError(
                f"{path} is not an .npz with 'passages' and 'queries' text arrays ({error}); "
                "rewrite it"
            ) from error
        if len(passages) != len(queries) or not passages:
            raise DataError(f"{path}: {len(passages)} passages, {len(queries)} queries; fix it")
        return TextPairs(passages, queries, retrieval_task())

    @staticmethod
    def pooled(task: TextEncoderTask) -> TextPairs:
        """Every pair of the task's train split (the centralised baseline's data)."""
        train = task.corpus["train"]
        return TextPairs([p.text for p in train], [p.query for p in train], task)

    def __len__(self) -> int:
        return len(self.passages)

    def train(self, model: nn.Module, training: LocalTraining) -> float:
        """AdamW on the in-batch-negatives loss (see the module docstring and `train_steps`)."""

        def batch_loss(module: nn.Module, positions: torch.Tensor) -> torch.Tensor:
            rows = positions.tolist()
            queries = module(*self.task.tokenize([self.queries[i] for i in rows])).float()
            passages = module(*self.task.tokenize([self.passages[i] for i in rows])).float()
            similarity = F.normalize(queries, dim=1) @ F.normalize(passages, dim=1).T
            return F.cross_entropy(SIMILARITY_SCALE * similarity, torch.arange(len(rows)))

        return train_steps(model, len(self), batch_loss, training, optimizer="adamw")
