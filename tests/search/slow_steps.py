"""A recipe step that makes a model slow on purpose, to test the search's time-boxing.

Importing this module registers `test_slow` (kind) with the step registry, as any step module
does; a search space YAML can then name it.
"""

from __future__ import annotations

import time
from typing import ClassVar

from torch import nn

from wattwise.compress.steps import Step, StepOutcome, register_step


class SlowDown(nn.Module):
    """Sleeps `seconds` in every forward call after the first `free_calls` (saving a variant
    makes two: the FLOP count and the probe)."""

    def __init__(self, inner: nn.Module, seconds: float, free_calls: int) -> None:
        super().__init__()
        self.inner, self.seconds, self.free_calls = inner, seconds, free_calls
        self.calls = 0

    def forward(self, *inputs):
        self.calls += 1
        if self.calls > self.free_calls:
            time.sleep(self.seconds)
        return self.inner(*inputs)


def apply_slow_down(context, module: nn.Module, step: SlowStep) -> StepOutcome:
    """Wrap the model so each call sleeps (the variant's probe call stays free)."""
    return StepOutcome(SlowDown(module, step.seconds, step.free_calls))


@register_step(apply_slow_down)
class SlowStep(Step):
    """`- test_slow: {seconds: 0.2}`: every forward call sleeps that long."""

    kind: ClassVar[str] = "test_slow"
    method: str = ""
    seconds: float = 0.2
    free_calls: int = 1
