"""The energy smells: one function per rule, each yielding (node, message) pairs.

Every rule states why the smell costs energy and the fix. Codes are stable (WW1xx); the
measured cost of each smell vs its fix is in docs/advise.md (bench/advise.py).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from wattwise.advise.facts import (
    FileFacts,
    call_name,
    calls_backward,
    dotted,
    is_optimizer_constructor,
)

SEVERITIES = ("info", "warning", "error")
SYNC_METHODS = ("item", "cpu", "numpy", "tolist")


@dataclass(frozen=True)
class Rule:
    """One energy smell: its code, short name, severity, why it costs energy, and the fix."""

    code: str
    name: str
    severity: str
    why: str
    fix: str
    check: Callable[[FileFacts], Iterator[ast.AST]]


def _inference_model_calls(facts: FileFacts) -> Iterator[ast.Call]:
    """Model calls in functions (or top-level code) that never call `.backward()`."""
    for node in ast.walk(facts.tree):
        if not facts.is_model_call(node):
            continue
        scope = facts.enclosing_function(node)
        if isinstance(scope, ast.FunctionDef) and scope.name == "forward":
            continue
        if not calls_backward(scope):
            yield node


def _training_loops(facts: FileFacts) -> Iterator[ast.AST]:
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.For | ast.While | ast.AsyncFor) and calls_backward(node):
            yield node


def _innermost_training_loop(facts: FileFacts, node: ast.AST) -> ast.AST | None:
    return next((loop for loop in facts.enclosing_loops(node) if calls_backward(loop)), None)


def check_no_grad(facts: FileFacts) -> Iterator[ast.AST]:
    for call in _inference_model_calls(facts):
        if not facts.in_no_grad(call) and not facts.in_lambda(call):
            yield call


def check_missing_eval(facts: FileFacts) -> Iterator[ast.AST]:
    seen: set[str] = set()
    for call in _inference_model_calls(facts):
        name = dotted(call.func)
        if name not in facts.eval_called_on and name not in seen:
            seen.add(name)
            yield call


def _is_single_sample(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        first = node.args[0] if node.args else None
        is_one_or_zero = isinstance(first, ast.Constant) and first.value in (0, 1)
        if node.func.attr == "unsqueeze" and is_one_or_zero and first.value == 0:
            return True
        if node.func.attr in ("view", "reshape") and is_one_or_zero and first.value == 1:
            return True
    if isinstance(node, ast.Subscript):
        index = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) else node.slice
        return isinstance(index, ast.Constant) and index.value is None
    return False


def check_batch_of_one(facts: FileFacts) -> Iterator[ast.AST]:
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.Call) and call_name(node).endswith("DataLoader"):
            size = next((k.value for k in node.keywords if k.arg == "batch_size"), None)
            if isinstance(size, ast.Constant) and size.value == 1:
                yield node
        elif (
            facts.is_model_call(node)
            and facts.enclosing_loops(node)
            and any(_is_single_sample(arg) for arg in node.args)
        ):
            yield node


def check_sync_in_training_step(facts: FileFacts) -> Iterator[ast.AST]:
    for node in ast.walk(facts.tree):
        if not isinstance(node, ast.Call):
            continue
        is_sync = isinstance(node.func, ast.Attribute) and node.func.attr in SYNC_METHODS
        is_print = call_name(node) == "print" and any(
            not isinstance(a, ast.Constant) for a in node.args
        )
        if not (is_sync or is_print):
            continue
        loop = _innermost_training_loop(facts, node)
        if loop is not None and not facts.under_interval_guard(node, loop):
            yield node


def _data_loaders(facts: FileFacts) -> Iterator[ast.Call]:
    for node in ast.walk(facts.tree):
        if isinstance(node, ast.Call) and call_name(node).endswith("DataLoader"):
            yield node


def _keyword(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def check_loader_workers(facts: FileFacts) -> Iterator[ast.AST]:
    for loader in _data_loaders(facts):
        workers = _keyword(loader, "num_workers")
        if workers is None or (isinstance(workers, ast.Constant) and workers.value == 0):
            yield loader


def check_pin_memory(facts: FileFacts) -> Iterator[ast.AST]:
    if not facts.uses_cuda:
        return
    for loader in _data_loaders(facts):
        pin = _keyword(loader, "pin_memory")
        if not (isinstance(pin, ast.Constant) and pin.value is True):
            yield loader


def check_fp32_training(facts: FileFacts) -> Iterator[ast.AST]:
    if facts.uses_cuda and not facts.uses_autocast_or_bf16:
        yield from _training_loops(facts)


def _loop_variables(loops: list[ast.AST]) -> set[str]:
    names = set()
    for loop in loops:
        targets = [loop.target] if isinstance(loop, ast.For | ast.AsyncFor) else []
        targets += [g.target for g in getattr(loop, "generators", [])]
        names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def check_recreated_in_loop(facts: FileFacts) -> Iterator[ast.AST]:
    """Built in a loop from arguments that do not change with the loop (loading a different
    model per iteration, e.g. `load(path)` for each path, is not this smell)."""
    for node in ast.walk(facts.tree):
        if not isinstance(node, ast.Assign):
            continue
        loops = facts.enclosing_loops(node)
        if not loops or not (
            facts.is_model_constructor(node.value) or is_optimizer_constructor(node.value)
        ):
            continue
        used = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
        if not used & _loop_variables(loops):
            yield node


def check_not_compiled(facts: FileFacts) -> Iterator[ast.AST]:
    if facts.uses_compile:
        return
    for call in _inference_model_calls(facts):
        if facts.enclosing_loops(call):
            yield call
            return


def check_frozen_gradients(facts: FileFacts) -> Iterator[ast.AST]:
    if facts.freezes_parameters or not facts.optimizer_roots:
        return
    for node in ast.walk(facts.tree):
        if not facts.is_model_call(node) or facts.in_no_grad(node):
            continue
        name = dotted(node.func)
        trained = any(name == root or root.startswith(f"{name}.") for root in facts.optimizer_roots)
        if not trained and _innermost_training_loop(facts, node) is not None:
            yield node


def check_unbounded_logging(facts: FileFacts) -> Iterator[ast.AST]:
    for node in ast.walk(facts.tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "append"
            and node.args
        ):
            continue
        loop = _innermost_training_loop(facts, node)
        if loop is None:
            continue
        value = node.args[0]
        if _holds_tensor_with_graph(facts, value, loop):
            yield node


TENSOR_WORDS = ("loss", "output", "logit", "pred", "grad")


def _holds_tensor_with_graph(facts: FileFacts, value: ast.AST, loop: ast.AST) -> bool:
    """A model output, or a name that is one (or is named like a loss/output)."""
    if facts.is_model_call(value):
        return True
    if not isinstance(value, ast.Name):
        return False
    if any(word in value.id.lower() for word in TENSOR_WORDS):
        return True
    for node in ast.walk(loop):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == value.id for t in node.targets
        ):
            return any(facts.is_model_call(n) for n in ast.walk(node.value))
    return False


RULES: tuple[Rule, ...] = (
    Rule(
        "WW101", "inference-without-no-grad", "warning",
        "the model is called outside torch.inference_mode()/no_grad(): autograd records every "
        "operation and keeps activations alive for a backward pass that never comes",
        "wrap inference in `with torch.inference_mode():` (or decorate the function with it)",
        check_no_grad,
    ),
    Rule(
        "WW102", "missing-eval", "warning",
        "inference without model.eval(): dropout still drops and batch norm updates its "
        "running statistics, so each call does training-mode work and gives noisier outputs",
        "call `model.eval()` once before inference",
        check_missing_eval,
    ),
    Rule(
        "WW103", "batch-of-one-in-loop", "warning",
        "one sample per forward call inside a loop: every call pays the full per-call overhead "
        "(dispatch, weight reads, kernel launches) for a single input",
        "batch the inputs (DataLoader with batch_size > 1, or torch.stack a list of samples)",
        check_batch_of_one,
    ),
    Rule(
        "WW104", "sync-in-training-step", "warning",
        ".item()/.cpu()/.numpy()/print(tensor) in every training step forces a device "
        "synchronisation: the GPU idles while the host waits, and the pipeline drains each step",
        "accumulate on the device and read values every N steps (`if step % 100 == 0:`)",
        check_sync_in_training_step,
    ),
    Rule(
        "WW105", "dataloader-without-workers", "info",
        "DataLoader without num_workers loads and transforms every batch in the training "
        "process, so the accelerator idles (still drawing power) while data is prepared",
        "pass `num_workers=` (e.g. the number of free cores) to DataLoader",
        check_loader_workers,
    ),
    Rule(
        "WW106", "dataloader-without-pin-memory", "info",
        "on a GPU, DataLoader without pin_memory=True copies each batch through pageable "
        "memory: slower host-to-device copies and no overlap with compute",
        "pass `pin_memory=True` (and `.to(device, non_blocking=True)`)",
        check_pin_memory,
    ),
    Rule(
        "WW107", "fp32-training-on-gpu", "info",
        "fp32 training on a GPU: on GPUs with native bf16 (NVIDIA Ampere and later) mixed "
        "precision does the same steps with fewer bytes moved and faster tensor-core math",
        "train under `torch.autocast('cuda', dtype=torch.bfloat16)` if the GPU supports bf16",
        check_fp32_training,
    ),
    Rule(
        "WW108", "recreated-in-loop", "error",
        "a model or optimizer is built inside a loop: weights are re-allocated (or re-read "
        "from disk) and optimizer state is thrown away on every iteration",
        "create the model and the optimizer once, before the loop",
        check_recreated_in_loop,
    ),
    Rule(
        "WW109", "repeated-inference-not-compiled", "info",
        "the same model runs in a loop without torch.compile: with fixed shapes, compiled "
        "kernels fuse operations and cut per-call overhead",
        "`model = torch.compile(model)` once (fixed shapes; measure: compilation costs energy too)",
        check_not_compiled,
    ),
    Rule(
        "WW110", "gradients-for-frozen-parameters", "warning",
        "a model that the optimizer does not train is called in the training loop with "
        "gradients on: backward computes and stores gradients nobody uses",
        "freeze it (`module.requires_grad_(False)`) or call it under `torch.no_grad()`",
        check_frozen_gradients,
    ),
    Rule(
        "WW111", "unbounded-tensor-logging", "warning",
        "a tensor is appended to a list on every training step: the list grows without bound "
        "and each entry keeps its step's autograd graph (memory, and a sync when printed)",
        "append `loss.item()` every N steps (or `loss.detach()`), or keep a running mean",
        check_unbounded_logging,
    ),
)  # fmt: skip

RULES_BY_CODE = {rule.code: rule for rule in RULES}
