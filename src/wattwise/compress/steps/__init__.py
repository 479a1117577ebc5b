"""Recipe steps. Each module registers its step classes (and any rebuilders) when imported.

Adding a step: one module in this package and one import line below.
"""

from wattwise.compress.steps import (  # noqa: F401  (each module registers its steps)
    cast,
    distill,
    finetune,
    fusion,
    layers,
    prune,
    prune_structured,
    qat,
    quantize,
    quantize_selective,
    quantize_static,
    smooth,
)
from wattwise.compress.steps.base import (
    HANDLERS,
    STEP_TYPES,
    LayerSelection,
    Step,
    StepOutcome,
    parse_step,
    register_step,
    step_kinds,
)

__all__ = [
    "HANDLERS",
    "STEP_TYPES",
    "LayerSelection",
    "Step",
    "StepOutcome",
    "parse_step",
    "register_step",
    "step_kinds",
]
