"""Structured pruning with torch-pruning's dependency graph: a smaller dense model.

Removing a conv channel or a Linear output also removes the inputs of every layer that reads
it; torch-pruning's DependencyGraph (Fang et al., "DepGraph", CVPR 2023) finds those coupled
groups by tracing autograd. What we add:

- The model's output width never changes (10 logits stay 10; MiniLM's 384-wide embeddings
  stay 384 so they compare with the original's): groups that reach the output are skipped.
  torch-pruning alone would shrink MiniLM's hidden size too (../shared/FIELD-NOTES.md).
- Attention heads go whole (Hugging Face BERT-style `query`/`key`/`value`), with the MLP width.
  Other attention blocks (GPT-2's fused `c_attn`, Llama's grouped `q_proj`/`k_proj`/...) keep
  their projections: their heads are split by reshapes torch-pruning does not see (it either
  cut GPT-2's fused projection mid-head or ran for minutes on Llama's), so only their MLP width
  shrinks.
- Norms torch-pruning has no pruner for (Llama's RMSNorm) count as traced when it traced their
  weights (its "unwrapped parameters").
- `ignore:` leaves named layers' input and output widths alone.
- A layer the graph cannot trace is named in a one-line error instead of a broken model.
- The new shapes are recorded ("resize") so `load_variant` rebuilds the model without
  torch-pruning (imported only when a prune step runs).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field
from torch import nn

from wattwise.compress.shapes import architecture_of, resize_record
from wattwise.compress.steps.base import Step, StepOutcome, register_step
from wattwise.compress.steps.prune import Sparsity
from wattwise.errors import ConfigError
from wattwise.measure.size import parameter_count
from wattwise.tasks.base import ModelInputs

if TYPE_CHECKING:
    import torch_pruning as tp

ROOT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRACE_BATCH = 2
TAYLOR_BATCHES = 4
TAYLOR_BATCH_SIZE = 32


class PruneStructured(Step):
    """`prune: {method: structured, sparsity: 0.3, importance: l2, iterations: 1, ignore: []}`.

    Removes `sparsity` of the channels of every prunable group (conv channels, Linear widths,
    attention heads and MLP width); `importance` ranks them by weight magnitude (l1, l2) or by
    |weight × gradient| on training batches (taylor, labelled tasks); `iterations` removes the
    channels in that many rounds, re-ranking in between; `ignore` lists layer-name globs whose
    widths must not change.
    """

    kind = "prune"
    method: Literal["structured"] = "structured"
    libraries = ("torch", "torch-pruning")
    sparsity: Sparsity = 0.5
    importance: Literal["l1", "l2", "taylor"] = "l2"
    iterations: int = Field(1, ge=1, le=100)
    ignore: tuple[str, ...] = ()


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) or fnmatchcase(name, f"{p}.*") for p in patterns)


@contextmanager
def _module_trace(model: nn.Module):
    """Records which modules ran (`ran`) and the innermost one running when an error rose."""
    state: dict[str, Any] = {"stack": [], "ran": set(), "failed": None}
    handles = []
    for name, module in model.named_modules():

        def before(_module, _inputs, name=name):
            state["stack"].append(name)
            state["ran"].add(name)

        def after(_module, _inputs, _output):
            state["stack"].pop()

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    try:
        yield state
    except Exception:
        state["failed"] = state["stack"][-1] if state["stack"] else None
        raise
    finally:
        for handle in handles:
            handle.remove()


def _run_traced(model: nn.Module, inputs: ModelInputs) -> tuple[set[str], str | None, Exception]:
    """Forward once; (modules that ran, innermost module at an error or None, the error)."""
    error: Exception | None = None
    state: dict[str, Any] = {}
    try:
        with _module_trace(model) as state, torch.no_grad():
            model(*inputs)
    except Exception as caught:  # noqa: BLE001  (any failure is reported with its layer)
        error = caught
    return state.get("ran", set()), state.get("failed"), error


def _zero_output(_module, _inputs, output):
    return torch.zeros_like(output) if isinstance(output, torch.Tensor) else output


def _affects_output(model: nn.Module, module: nn.Module, inputs: ModelInputs) -> bool:
    """Whether zeroing `module`'s output changes the model's output (a dead branch does not)."""
    with torch.no_grad():
        reference = model(*inputs)
        handle = module.register_forward_hook(_zero_output)
        try:
            changed = model(*inputs)
        finally:
            handle.remove()
    return not torch.equal(reference, changed)


def check_traceable(
    model: nn.Module, graph: tp.DependencyGraph, inputs: ModelInputs, ignore: tuple[str, ...]
) -> None:
    """Raise ConfigError naming the layers that shape the output but are not in the graph.

    Such a layer (e.g. one run under `torch.no_grad()`, or one feeding it) would keep its widths
    while the layers around it shrink. Layers on a dead branch (BERT's unused pooler) are fine.
    """
    ran, _, _ = _run_traced(model, inputs)
    untraced = [
        name
        for name, module in model.named_modules()
        if name
        and name in ran
        and not _traced(module, graph)
        and not _matches(name, ignore)
        and any(True for _ in module.parameters(recurse=False))
        and _affects_output(model, module, inputs)
    ]
    if untraced:
        listed = ", ".join(untraced)
        raise ConfigError(
            f"torch-pruning cannot trace layer(s) {listed} through autograd; leave them unpruned "
            f"with the prune step's ignore list (ignore: [{listed}])"
        )


def _traced(module: nn.Module, graph: tp.DependencyGraph) -> bool:
    """In the graph as a module, or through every parameter it owns (a norm without a pruner,
    e.g. Llama's RMSNorm: torch-pruning prunes such weights as "unwrapped parameters")."""
    if module in graph.module2node:
        return True
    own = list(module.parameters(recurse=False))
    return bool(own) and all(parameter in graph.module2node for parameter in own)


def kept_attention_layers(model: nn.Module, heads: dict[nn.Module, int]) -> tuple[str, ...]:
    """Names of the Linear layers inside attention blocks whose heads are not pruned whole
    (every module named "...Attention..." holding no BERT-style head projection; not the
    model itself, whatever its class is called)."""
    kept = []
    for name, module in model.named_modules():
        if not name or "attention" not in type(module).__name__.lower():
            continue
        inner = dict(module.named_modules())
        if any(layer in heads for layer in inner.values()):
            continue
        kept += [
            f"{name}.{sub}" for sub, layer in inner.items() if sub and isinstance(layer, nn.Linear)
        ]
    return tuple(dict.fromkeys(kept))


def _out_channel_fn(module: nn.Module):
    import torch_pruning as tp

    return (
        tp.prune_linear_out_channels
        if isinstance(module, nn.Linear)
        else (tp.prune_conv_out_channels)
    )


def protected_roots(
    model: nn.Module, graph: tp.DependencyGraph, ignore: tuple[str, ...]
) -> list[nn.Module]:
    """Prunable layers whose channel group would change the model's output width or touch an
    ignored layer: torch-pruning must not use them as roots."""
    import torch_pruning as tp

    ignored = {m for name, m in model.named_modules() if name and _matches(name, ignore)}
    roots = []
    for module in model.modules():
        if not isinstance(module, ROOT_TYPES) or module not in graph.module2node:
            continue
        if module in ignored:
            roots.append(module)
            continue
        group = graph.get_pruning_group(module, _out_channel_fn(module), idxs=[0])
        for dependency, _ in group:
            target = dependency.target
            # The output is either a pseudo-node of its own or the last layer's out-channels.
            reaches_output = isinstance(target.module, tp.ops._OutputOp) or (
                not target.outputs and not graph.is_in_channel_pruning_fn(dependency.handler)
            )
            if reaches_output or target.module in ignored:
                roots.append(module)
                break
    return roots


def attention_heads(model: nn.Module, ignore: tuple[str, ...]) -> dict[nn.Module, int]:
    """{query/key/value Linear: head count} for Hugging Face BERT-style self-attention."""
    heads: dict[nn.Module, int] = {}
    for name, module in model.named_modules():
        projections = [getattr(module, p, None) for p in ("query", "key", "value")]
        count = getattr(module, "num_attention_heads", None)
        is_attention = isinstance(count, int) and all(isinstance(p, nn.Linear) for p in projections)
        if is_attention and not _matches(name, ignore):
            heads.update(dict.fromkeys(projections, count))
    return heads


def _update_attention_attributes(model: nn.Module) -> None:
    """Keep BERT-style head counts true to the pruned projections (forward reads head size)."""
    for module in model.modules():
        query = getattr(module, "query", None)
        size = getattr(module, "attention_head_size", None)
        if isinstance(query, nn.Linear) and isinstance(size, int) and size:
            module.num_attention_heads = query.out_features // size
            module.all_head_size = query.out_features


def _importance(name: str):
    import torch_pruning as tp

    if name == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


def _accumulate_taylor_gradients(context, model: nn.Module) -> None:
    """Gradients of the task loss on a few training batches, for Taylor importance."""
    loss_fn = getattr(context.task, "supervised_loss", None)
    labelled = getattr(context.task, "labels", None) is not None
    if loss_fn is None or not labelled:
        raise ConfigError(
            f"importance taylor needs a labelled task; {context.task.name} has no labels: "
            "use importance l1 or l2"
        )
    model.zero_grad()
    batches = context.task.training_batches(TAYLOR_BATCH_SIZE, seed=context.seed)
    for _ in range(TAYLOR_BATCHES):
        loss_fn(model, next(batches)).backward()


def _build_pruner(model: nn.Module, step: PruneStructured, inputs, roots, heads):
    """torch-pruning's MetaPruner for the step; its own failures become one-line errors."""
    import torch_pruning as tp

    try:
        return tp.pruner.MetaPruner(
            model,
            inputs,
            importance=_importance(step.importance),
            pruning_ratio=step.sparsity,
            iterative_steps=step.iterations,
            ignored_layers=roots,
            num_heads=heads,
            prune_num_heads=bool(heads),
            prune_head_dims=False,  # whole heads go; every kept head keeps its 32/64 dims
            head_pruning_ratio=step.sparsity if heads else 0.0,
        )
    except Exception as error:
        raise ConfigError(
            f"torch-pruning failed on this model ({_first_line(error)}); name the layer it "
            "cannot handle in the prune step's ignore list"
        ) from error


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _prune_in_place(context, module: nn.Module, step: PruneStructured, inputs: ModelInputs):
    """Build the dependency graph and run torch-pruning's rounds on `module`; returns the
    attention projections pruned by whole heads and the names of those kept whole."""
    import torch_pruning as tp

    with warnings.catch_warnings():
        # The norms it prunes as "unwrapped parameters" (see `_traced`) are expected here.
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        try:
            graph = tp.DependencyGraph().build_dependency(module, example_inputs=inputs)
        except Exception as error:
            raise ConfigError(
                f"torch-pruning cannot trace the model ({_first_line(error)}); add the layer it "
                "names to the prune step's ignore list"
            ) from error
        heads = attention_heads(module, step.ignore)
        kept = kept_attention_layers(module, heads)
        ignore = step.ignore + kept
        check_traceable(module, graph, inputs, ignore)
        roots = protected_roots(module, graph, ignore)
        pruner = _build_pruner(module, step, inputs, roots, heads)
        for _ in range(step.iterations):
            if step.importance == "taylor":
                _accumulate_taylor_gradients(context, module)
            try:
                pruner.step()
            except Exception as error:
                raise ConfigError(
                    f"torch-pruning failed while pruning this model ({_first_line(error)}); name "
                    "the layers around it in the prune step's ignore list"
                ) from error
    return heads, kept


def apply_structured(context, module: nn.Module, step: PruneStructured) -> StepOutcome:
    """Remove channels, widths and heads; record the new shapes for `load_variant`."""

    inputs = context.task.example_inputs(TRACE_BATCH, "val")
    before = architecture_of(module)
    parameters_before = parameter_count(module)
    _, failed, error = _run_traced(module, inputs)
    if error is not None:
        raise ConfigError(
            f"the model fails on its example inputs in layer {failed!r} ({_first_line(error)}); "
            "fix the model before pruning"
        )
    heads, kept = _prune_in_place(context, module, step, inputs)
    module.zero_grad(set_to_none=True)
    _update_attention_attributes(module)
    _, failed, error = _run_traced(module.eval(), inputs)
    if error is not None:
        raise ConfigError(
            f"after pruning, layer {failed!r} no longer fits its inputs (torch-pruning could "
            f"not trace it); add it and the layer feeding it to ignore: [{failed}, ...]"
        )
    record = resize_record(before, module)
    parameters_after = parameter_count(module)
    removed = 1 - parameters_after / parameters_before
    notes = [
        f"structured pruning ({step.importance} importance, {step.iterations} round(s)): "
        f"{step.sparsity:.0%} of the channels of each prunable group removed, "
        f"{removed:.1%} of all parameters ({parameters_before:,} → {parameters_after:,})",
        "output width kept"
        + (f"; attention heads pruned whole in {len(heads) // 3} layers" if heads else "")
        + (f"; {len(kept)} attention projections kept whole" if kept else ""),
    ]
    metrics = {
        "parameters_before": parameters_before,
        "parameters_after": parameters_after,
        "parameters_removed_fraction": removed,
        "resized_tensors": len(record["tensors"]) if record else 0,
    }
    return StepOutcome(module, rebuild=[record] if record else [], notes=notes, metrics=metrics)


register_step(apply_structured)(PruneStructured)
