"""End-to-end greedy generation as the draft search times it: one call per held-out prompt in
turn, every output compared with the target's own tokens.

A draft never changes greedy output (the target verifies every drafted token), so an output
that differs from the target alone's reveals broken verification: each timed call is compared
with the target's reference tokens, and the prompts the timing did not reach are checked
after it (`check_remaining`). The speed itself is timed by `search.timing`, in alternation with
the target alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from wattwise.models.generation import greedy_generate


class OutputChanged(Exception):
    """A draft changed greedy output: raised by a strict `DecodeRunner` at the first difference,
    so a broken draft stops its timing at once."""


def first_difference(got: torch.Tensor, expected: torch.Tensor) -> str:
    """Where two token sequences (shape (1, n)) first differ, in words."""
    got_ids, expected_ids = got[0].tolist(), expected[0].tolist()
    for index, (a, b) in enumerate(zip(got_ids, expected_ids, strict=False)):
        if a != b:
            return f"new token {index}: {a} instead of the target's {b}"
    return f"{len(got_ids)} new tokens instead of the target's {len(expected_ids)}"


@dataclass
class DecodeRunner:
    """A callable for `time_against_original`: each call generates `new_tokens` greedily from
    the next prompt (batch 1, EOS ignored so every call does the same work).

    Attributes:
        model: the model whose tokens come out (the target, or a quantized target).
        draft: the draft (speculative decoding), or None.
        reference: the target alone's tokens per prompt; None: nothing to compare with.
        decode: the greedy decoding function (`greedy_generate`; a test passes a broken one).
        strict: raise `OutputChanged` at the first difference (drafts: output must not change).
        mismatch: the first difference from `reference` seen ("" when none).
        checked: prompts whose output was compared.
    """

    model: nn.Module
    prompts: list[torch.Tensor]
    new_tokens: int
    draft: nn.Module | None = None
    reference: list[torch.Tensor] | None = None
    decode: Callable = greedy_generate
    strict: bool = False
    calls: int = 0
    mismatch: str = ""
    checked: set[int] = field(default_factory=set)
    accepted: float = 0.0
    drafted: int = 0

    def __call__(self) -> None:
        index = self.calls % len(self.prompts)
        self.calls += 1
        self.run_prompt(index)

    def run_prompt(self, index: int) -> torch.Tensor:
        """Generate from prompt `index`; compare with the reference; count acceptance."""
        tokens, stats = self.decode(
            self.model, self.prompts[index], self.new_tokens, draft=self.draft, stop_at_eos=False
        )
        if stats.acceptance_rate is not None:
            # Weighted by drafted tokens, so the sum is accepted / drafted over all calls.
            self.accepted += stats.acceptance_rate * stats.draft_forwards
            self.drafted += stats.draft_forwards
        if self.reference is not None:
            self.checked.add(index)
            if not self.mismatch and not torch.equal(tokens, self.reference[index]):
                self.mismatch = f"prompt {index}, {first_difference(tokens, self.reference[index])}"
                if self.strict:
                    raise OutputChanged(self.mismatch)
        return tokens

    def check_remaining(self) -> None:
        """Run the prompts the timing did not reach, so every prompt's output is compared."""
        for index in range(len(self.prompts)):
            if index not in self.checked:
                self.run_prompt(index)

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / drafted tokens over every call (None without a draft)."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def identical(self) -> bool:
        """Whether every compared output equalled the target's."""
        return not self.mismatch


def reference_run(
    model: nn.Module, prompts: list[torch.Tensor], new_tokens: int, decode: Callable
) -> tuple[list[torch.Tensor], float]:
    """The target alone's tokens for each prompt, and its tokens/s over them (warm the model
    up first: this times every call)."""
    tokens, generated, started = [], 0, time.perf_counter()
    for prompt in prompts:
        output, stats = decode(model, prompt, new_tokens, stop_at_eos=False)
        tokens.append(output)
        generated += stats.new_tokens
    return tokens, generated / (time.perf_counter() - started)
