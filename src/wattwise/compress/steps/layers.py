"""`drop_layers`: keep some of a transformer encoder's layers (the rest are removed).

Keeping evenly spaced layers (first and last included) follows DistilBERT (Sanh et al., 2019),
which initialised its student from every other teacher layer. The encoder's layer list is
found as the longest `nn.ModuleList` of identical blocks (`transformer.encoder.layer` in BERT)
or named with `container:`. A "drop_layers" record lets `load_variant` rebuild the shorter
encoder.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn

from wattwise.backends.rebuild import get_submodule_parent, register_rebuilder
from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.errors import ConfigError


class DropLayers(Step):
    """`drop_layers: {keep: 3}` or `drop_layers: {keep: 3, layers: [0, 2, 5]}`.

    `keep`: how many layers remain; `layers`: which (0-based, default evenly spaced);
    `container`: the ModuleList's name when the longest one is not the encoder's.
    """

    kind = "drop_layers"
    method: Literal[""] = ""
    keep: int = Field(ge=1)
    layers: tuple[int, ...] | None = None
    container: str | None = None


def find_layer_list(model: nn.Module, container: str | None = None) -> tuple[str, nn.ModuleList]:
    """The encoder's layer list: the named one, or the longest ModuleList of identical blocks."""
    if container is not None:
        try:
            found = model.get_submodule(container)
        except AttributeError:
            found = None
        if not isinstance(found, nn.ModuleList):
            raise ConfigError(
                f"drop_layers container {container!r} is not a ModuleList in the model"
            )
        return container, found
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.ModuleList)
        and len(m) > 1
        and len({type(child) for child in m}) == 1
        and any(True for _ in m.parameters())
    ]
    if not candidates:
        raise ConfigError(
            "drop_layers needs a transformer encoder (a list of identical layers); this model has "
            "none: use prune structured instead"
        )
    return max(candidates, key=lambda item: len(item[1]))


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` indices spread over range(total), first and last included (keep 1: the last)."""
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def choose_layers(step: DropLayers, total: int) -> list[int]:
    """The layer indices to keep; ConfigError when they do not fit the encoder."""
    if step.keep >= total:
        raise ConfigError(
            f"drop_layers keep {step.keep} leaves nothing to drop: the encoder has {total} layers"
        )
    if step.layers is None:
        return evenly_spaced(total, step.keep)
    chosen = sorted(set(step.layers))
    if len(chosen) != step.keep or not all(0 <= i < total for i in chosen):
        raise ConfigError(
            f"drop_layers layers {list(step.layers)} must be {step.keep} distinct indices in "
            f"0..{total - 1}"
        )
    return chosen


def keep_layers(model: nn.Module, container: str, indices: list[int]) -> nn.Module:
    """Replace the layer list with the kept layers; keep a Hugging Face config consistent."""
    parent, child = get_submodule_parent(model, container)
    layers = getattr(parent, child)
    setattr(parent, child, nn.ModuleList([layers[i] for i in indices]))
    # Decoders index their KV cache by each attention's `layer_idx`: renumber the kept layers.
    for position, index in enumerate(indices):
        for module in layers[index].modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config.num_hidden_layers = len(indices)
    return model


def apply_drop_layers(context, module: nn.Module, step: DropLayers) -> StepOutcome:
    """Keep `step.keep` layers of the encoder (evenly spaced unless `layers` names them)."""
    container, layers = find_layer_list(module, step.container)
    total = len(layers)
    kept = choose_layers(step, total)
    module = keep_layers(module, container, kept)
    notes = [f"kept layers {kept} of {total} in {container}; {total - len(kept)} dropped"]
    return StepOutcome(
        module,
        rebuild=[{"op": "drop_layers", "container": container, "keep": kept}],
        notes=notes,
        metrics={"layers_before": total, "layers_after": len(kept), "kept": kept},
    )


register_step(apply_drop_layers)(DropLayers)


@register_rebuilder("drop_layers")
def _rebuild_drop_layers(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    return keep_layers(model, record["container"], record["keep"])
