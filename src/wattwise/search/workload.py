"""What a candidate is timed on: the fixed kernel-level batch, or the task's real corpus.

The fixed batch (for text: every input exactly 128 real tokens) measures kernels; the corpus
workload measures what a user's batch job sees: real passages and queries, sorted by length
and padded per batch, so short texts cost less. Both are timed in alternation with the
original on the same batches (`search.timing`), so their ratios compare like with like.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from wattwise.errors import ConfigError
from wattwise.tasks.base import ModelInputs, Task, module_device

WORKLOADS = ("fixed", "corpus")


@dataclass
class Workload:
    """Batches to time, and how many samples and tokens they hold.

    Attributes:
        name: "fixed" (one batch of the user's batch size) or "corpus" (length-sorted batches).
        batches: model inputs, one tuple per batch.
        samples / tokens: totals over `batches` (tokens: non-padding tokens; 0 for non-text).
    """

    name: str
    batches: list[ModelInputs]
    samples: int
    tokens: int

    def runner(self, module: Callable) -> Callable[[], object]:
        """A callable running `module` on the next batch, cycling: two runners called the same
        number of times stay on the same batch, so each timed pair compares like with like."""
        device = module_device(module)
        cycle = itertools.cycle(self._batches_on(device))

        def run() -> object:
            output = module(*next(cycle))
            if device.type == "cuda":  # a call ends when its kernels have run, not when queued
                torch.cuda.synchronize(device)
            return output

        return run

    def _batches_on(self, device: torch.device) -> list[ModelInputs]:
        """The batches on `device` (copied once, outside any timing)."""
        if device.type == "cpu":
            return self.batches
        return [tuple(t.to(device) for t in batch) for batch in self.batches]

    def full_pass_s(self, module: Callable) -> float:
        """Seconds to run every batch once (after one warm-up batch)."""
        run = self.runner(module)
        with torch.inference_mode():
            run()
            started = time.perf_counter()
            for _ in self.batches:
                run()
        return time.perf_counter() - started

    def describe(self) -> str:
        """One line for the report."""
        if self.name == "fixed":
            return "the fixed kernel-level batch (" + f"{self.samples} samples)"
        return (
            f"the task's real corpus: {self.samples} texts ({self.tokens:,} tokens) in "
            f"{len(self.batches)} length-sorted batches padded per batch"
        )


def _tokens(batch: ModelInputs) -> int:
    """Real tokens in a text batch: the sum of its attention mask, the 0/1 integer input with
    the most ones (token type ids are 0/1 too, but mostly 0); 0 for non-text inputs."""
    masks = [
        int(t.sum())
        for t in batch[1:]
        if not t.is_floating_point()
        and t.dim() == 2
        and t.numel()
        and int(t.max()) <= 1
        and int(t.min()) >= 0
    ]
    return max(masks, default=0)


def make_workload(task: Task, batch_size: int, split: str, name: str) -> Workload:
    """The workload called `name` for `task` at `batch_size` on `split`."""
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)}")
    if name == "fixed":
        batches = [task.example_inputs(batch_size, split)]
    else:
        batches = task.corpus_batches(batch_size, split)
        if not batches:
            raise ConfigError(
                "--workload corpus needs a task with a text corpus (minilm or a Hugging Face "
                "encoder); use --workload fixed"
            )
    samples = sum(len(b[0]) for b in batches)
    return Workload(name, batches, samples, sum(_tokens(b) for b in batches))
