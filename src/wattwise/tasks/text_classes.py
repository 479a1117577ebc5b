"""Text-classifier task: a Hugging Face sequence classifier scored against the original.

Same corpus, splits and profiling inputs as the sentence encoders (`text.py`); the outputs are
class logits, so quality is their cosine to the original's logits (fidelity, as for any model
scored without labels) and the share of texts given the original's class (agreement).
"""

from __future__ import annotations

import torch.nn.functional as F

from wattwise.tasks.base import (
    Forward,
    MetricSpec,
    Quality,
    mean_ci95,
    proportion_ci95,
)
from wattwise.tasks.text import TextEncoderTask


class TextClassifierTask(TextEncoderTask):
    """Scores a text classifier against the original model (`reference`)."""

    name = "text-classification"
    metrics = (
        MetricSpec("fidelity", True, "mean cosine to the original's logits"),
        MetricSpec("agreement", True, "share of texts given the original's class"),
    )
    output_kind = "logits"

    def __init__(self, tokenizer, reference: Forward | None, class_names: tuple[str, ...] = ()):
        super().__init__(tokenizer, reference)
        self.class_names = tuple(class_names)

    def evaluate(self, forward: Forward, split: str = "test") -> Quality:
        logits, reference = self.outputs_and_reference(forward, split)
        cosines = F.cosine_similarity(logits, reference, dim=1)
        agreed = (logits.argmax(dim=1) == reference.argmax(dim=1)).float()
        agreement = float(agreed.mean())
        count = len(agreed)
        return Quality(
            {"fidelity": float(cosines.mean()), "agreement": agreement},
            split,
            count,
            {"fidelity": mean_ci95(cosines), "agreement": proportion_ci95(agreement, count)},
        )
