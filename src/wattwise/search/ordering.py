"""From measured priors to a search order: likeliest winners first, peers after, and which
candidates are not worth starting on this machine.

A candidate's prior is the probe's measured speed of its compute path (ONNX Runtime int8,
torch.ao int8, bf16, ...) relative to fp32 eager, times what its structural steps remove
(dropped layers, pruned channels). It is a guess to order by, never a result: every candidate
that starts is measured against the original.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattwise.compress.recipe import Recipe
from wattwise.search.probe import Priors
from wattwise.search.space import Candidate

# Below this predicted speed-up a non-peer candidate is not started: it would need to be more
# than twice as fast as the probe measured its path to beat the original.
NOT_WORTH_STARTING = 0.5


def compute_path(recipe: Recipe) -> str:
    """The probe path a recipe's forward pass runs through."""
    backend = recipe.backend.name
    for step in recipe.steps:
        method = getattr(step, "method", "")
        implementation = getattr(step, "implementation", "auto")
        if step.kind == "quantize" and backend == "onnxruntime":
            # Static int8 also quantizes convolutions (QLinearConv); dynamic leaves them fp32.
            return "ort_int8_static" if method == "static" else "ort_int8"
        if step.kind == "quantize" and method.startswith("int8"):
            if implementation == "torchao":
                return "torchao_int8"
            return "torch_ao_int8"
        if step.kind == "cast" and method == "bf16":
            return "torch_bf16"
    return "ort_fp32" if backend == "onnxruntime" else "fp32"


def structural_gain(recipe: Recipe, layer_count: int | None) -> float:
    """How much less work the structural steps leave (layers kept, channels pruned)."""
    gain = 1.0
    for step in recipe.steps:
        keep = getattr(step, "keep", None)
        if step.kind == "drop_layers" and isinstance(keep, int) and layer_count and keep > 0:
            gain *= layer_count / keep
        sparsity = getattr(step, "sparsity", None)
        if step.kind == "prune" and getattr(step, "method", "") == "structured" and sparsity:
            gain *= 1.0 / max(1.0 - float(sparsity), 0.05)
    return gain


def prior_ratio(recipe: Recipe, priors: Priors, layer_count: int | None = None) -> float:
    """Predicted speed-up of a recipe over fp32 eager on this machine."""
    path = compute_path(recipe)
    ratio = 1.0 if path == "fp32" else priors.ratio(path)
    if recipe.backend.name == "torch_compile" and path in ("torchao_int8", "fp32", "torch_bf16"):
        # Compiled paths fuse what eager runs op by op; the probe times eager kernels only.
        # torchao's int8 is meant to run compiled: with int8 dot products its compiled kernels
        # follow torch.ao's speed (measured 3.7-3.9x on MiniLM with VNNI, docs/benchmarks.md).
        ratio = max(ratio, priors.ratio("torch_ao_int8")) if path == "torchao_int8" else ratio
    return ratio * structural_gain(recipe, layer_count)


def libraries_of(recipe: Recipe) -> list[str]:
    """The libraries a recipe needs beyond PyTorch (for the report: "which peers it combines")."""
    return [name for name in recipe.libraries if name != "torch"]


@dataclass
class Ordered:
    """Candidates in the order to try, each with its prior, and those not worth starting."""

    order: list[tuple[Candidate, float]]
    not_started: list[tuple[Candidate, float, str]]


def order_candidates(
    candidates: list[Candidate],
    priors: Priors,
    layer_count: int | None = None,
    speed_matters: bool = True,
) -> Ordered:
    """Likeliest winners first, one per compute path before any path's second (see
    `_first_of_each_path`); within equal priors the space's own order (milder first);
    candidates that train after those that do not; peers after every other candidate. When
    speed is what is optimised, non-peers predicted below NOT_WORTH_STARTING are left out with
    the measured reason."""
    ranked: list[tuple[int, Candidate, float]] = []
    not_started: list[tuple[Candidate, float, str]] = []
    for index, candidate in enumerate(candidates):
        ratio = prior_ratio(candidate.recipe, priors, layer_count)
        if speed_matters and not candidate.peer and ratio < NOT_WORTH_STARTING:
            path = compute_path(candidate.recipe)
            not_started.append(
                (
                    candidate,
                    ratio,
                    f"not started: the hardware probe measured its path ({path}) at {ratio:.2f}x "
                    "fp32 on this machine",
                )
            )
            continue
        ranked.append((index, candidate, ratio))
    # Candidates that train (distillation: minutes on CPU, and layer dropping risks the budget)
    # come after the ones that do not, whatever their prior: a fast, likely winner first.
    winners = _first_of_each_path(
        sorted(
            (r for r in ranked if not r[1].peer),
            key=lambda r: (trains(r[1]), -round(r[2], 1), r[0]),
        )
    )
    peers = [r for r in ranked if r[1].peer]
    return Ordered([(c, ratio) for _, c, ratio in [*winners, *peers]], not_started)


def _first_of_each_path(ranked: list[tuple[int, Candidate, float]]):
    """The best-ranked candidate of every compute path (and backend) first, then the second of
    each, and so on; training candidates stay last.

    The probe times kernels, not whole models, so its error is per path: on an AVX-512 BF16 CPU
    it put ONNX Runtime int8 at 10x and bf16 at 3.9x; on MiniLM the whole models ran 3.5x (fused
    ORT int8) and 3.1-3.7x (bf16 eager, compiled), and five ONNX Runtime int8 variants spent the
    time limit before bf16 was tried (docs/benchmarks.md). Measuring one of each path first
    bounds what a wrong prior can cost.
    """
    seen: dict[tuple[str, str, bool], int] = {}
    keyed = []
    for position, entry in enumerate(ranked):
        recipe = entry[1].recipe
        # An execution plan changes speed as much as a path does (the probe times kernels, not
        # plans), so a planned candidate is measured in the first round beside the unplanned.
        path = (compute_path(recipe), recipe.backend.name, recipe.backend.has_execution_plan)
        keyed.append(((trains(entry[1]), seen.get(path, 0), position), entry))
        seen[path] = seen.get(path, 0) + 1
    return [entry for _, entry in sorted(keyed, key=lambda pair: pair[0])]


def trains(candidate: Candidate) -> bool:
    """Whether a candidate has a training step (distillation, fine-tuning: a `steps` count)."""
    return any(getattr(step, "steps", None) for step in candidate.recipe.steps)


def export_path(candidate: Candidate) -> str:
    """Backend and exporter: what a candidate's compression time depends on most (the dynamo
    ONNX exporter takes several times the TorchScript one)."""
    backend = candidate.recipe.backend
    return f"{backend.name}:{getattr(backend, 'exporter', '')}"
