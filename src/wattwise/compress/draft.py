"""A speculative-decoding draft made from the target itself, with the existing recipe steps.

The recipe keeps a few of the target's layers (evenly spaced, DistilBERT-style initialisation),
distils them on the target's next-token distributions (KL on logits, the project's one training
loop) and quantizes the Linear layers to int8 (dynamic, torch.ao). The draft shares the
target's tokenizer and vocabulary, which assisted generation requires.

    steps:
      - drop_layers: {keep: 2}
      - distill: {steps: 200, temperature: 1.0}
      - quantize: {method: int8_dynamic}
"""

from __future__ import annotations

from typing import Any

from wattwise.compress.pipeline import run_recipe
from wattwise.compress.recipe import Recipe
from wattwise.errors import ConfigError
from wattwise.models.registry import LoadedModel

# Sequences per distillation step (of the task's block length).
DISTILL_BATCH = 16


def draft_int8_step() -> dict[str, Any]:
    """The draft's int8 step: dynamic int8 (torch.ao) on the Linear layers."""
    return {"quantize": {"method": "int8_dynamic", "implementation": "torch_ao"}}


def draft_recipe(
    keep_layers: int = 2, distill_steps: int = 200, int8: bool = True
) -> dict[str, Any]:
    """The draft recipe as the YAML a user would write (a dict)."""
    steps: list[dict[str, Any]] = [{"drop_layers": {"keep": keep_layers}}]
    if distill_steps:
        steps.append(
            {"distill": {"steps": distill_steps, "temperature": 1.0, "batch_size": DISTILL_BATCH}}
        )
    if int8:
        steps.append(draft_int8_step())
    return {"steps": steps, "backend": "eager"}


def build_draft(
    target: LoadedModel,
    keep_layers: int = 2,
    distill_steps: int = 200,
    int8: bool = True,
    seed: int = 0,
    show_progress: bool = False,
) -> LoadedModel:
    """A draft `LoadedModel` made from `target` by `draft_recipe` (in memory).

    Example:
        draft = build_draft(load_model("tiny-lm"), keep_layers=2, distill_steps=200)
    """
    if not target.extra.get("causal_lm"):
        raise ConfigError(f"{target.name!r} is not a causal LM; drafts are made from causal LMs")
    recipe = Recipe.from_dict(draft_recipe(keep_layers, distill_steps, int8))
    run = run_recipe(target, recipe, seed=seed, measure_steps=False, show_progress=show_progress)
    return LoadedModel(
        f"draft of {target.name} ({recipe.describe()})",
        run.module,
        target.task,
        "draft",
        {"source": target.spec, "recipe": recipe.to_dict()},
        {**target.extra, "notes": run.notes},
    )
