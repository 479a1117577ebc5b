"""Magnitude pruning that zeroes weights: unstructured (any weight) and 2:4 semi-structured.

Unstructured pruning keeps every shape, so dense kernels run exactly as fast as before: the
step says so and reports the size the weights would take stored sparse instead. Only 2:4
sparsity (two zeros in every four weights) has fast kernels, on CUDA (torch's
`to_sparse_semi_structured`, Ampere or newer).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator
from torch import nn
from torch.nn.utils import prune

from wattwise.backends.rebuild import get_submodule_parent, register_rebuilder
from wattwise.compress.steps.base import Step, StepOutcome, register_step, selected_modules
from wattwise.errors import ConfigError, UnsupportedOnDeviceError

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_sparsity(value: float) -> float:
    """Sparsity is the fraction of weights (or channels) removed: 0 ≤ s < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"sparsity {value} is outside [0, 1); use e.g. 0.5 to remove half")
    return value


Sparsity = Annotated[float, AfterValidator(check_sparsity)]


class PruneUnstructured(Step):
    """`prune: {method: unstructured, sparsity: 0.5, scope: global}`: zero the smallest weights.

    `scope: global` ranks all selected weights together (layers end with different sparsity);
    `scope: layer` removes the same fraction from each layer. Linear and Conv weights by default;
    `layers:` narrows the choice.
    """

    kind = "prune"
    method: Literal["unstructured"] = "unstructured"
    sparsity: Sparsity = 0.5
    scope: Literal["global", "layer"] = "global"


def sparse_storage_bytes(weight: torch.Tensor) -> dict[str, int]:
    """Bytes of a weight stored dense, as CSR (rows = output units), or as a bitmask + values.

    CSR column indices use the narrowest integer that fits (int16 below 65,536 columns); row
    pointers are int32.
    """
    matrix = weight.detach().reshape(weight.shape[0], -1)
    rows, columns = matrix.shape
    nonzero = int(torch.count_nonzero(matrix))
    value_bytes = matrix.element_size()
    index_bytes = 2 if columns < 2**16 else 4
    return {
        "dense": matrix.numel() * value_bytes,
        "csr": nonzero * (value_bytes + index_bytes) + (rows + 1) * 4,
        "bitmask": (matrix.numel() + 7) // 8 + nonzero * value_bytes,
    }


def _selected_weights(module: nn.Module, step: Step) -> list[tuple[str, nn.Module]]:
    chosen = selected_modules(module, step.layers, PRUNABLE_TYPES)
    if not chosen:
        raise ConfigError(
            f"{step.describe()}: no Linear or Conv layer matches the step's `layers:`; "
            "widen include/exclude or module_types"
        )
    return chosen


def apply_unstructured(context, module: nn.Module, step: PruneUnstructured) -> StepOutcome:
    """Zero the smallest-magnitude weights and make it permanent (no masks left behind)."""
    chosen = _selected_weights(module, step)
    if step.scope == "global":
        prune.global_unstructured(
            [(m, "weight") for _, m in chosen],
            pruning_method=prune.L1Unstructured,
            amount=step.sparsity,
        )
    else:
        for _, layer in chosen:
            prune.l1_unstructured(layer, "weight", amount=step.sparsity)
    for _, layer in chosen:
        prune.remove(layer, "weight")  # folds the mask into the weight: a plain tensor again

    weights = [m.weight for _, m in chosen]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    sizes = [sparse_storage_bytes(w) for w in weights]
    chosen_dense = sum(s["dense"] for s in sizes)
    other = sum(t.numel() * t.element_size() for t in module.state_dict().values()) - chosen_dense
    best_sparse = other + sum(min(s["csr"], s["bitmask"]) for s in sizes)
    dense_total = other + chosen_dense
    sparsity = zeros / total
    metrics: dict[str, Any] = {
        "sparsity": sparsity,
        "pruned_weights": zeros,
        "selected_weights": total,
        "layers": len(chosen),
        "dense_weight_bytes": dense_total,
        "sparse_weight_bytes": best_sparse,
        "csr_weight_bytes": other + sum(s["csr"] for s in sizes),
        "bitmask_weight_bytes": other + sum(s["bitmask"] for s in sizes),
    }
    notes = [
        f"unstructured sparsity {sparsity:.1%} of {total:,} weights in {len(chosen)} layers "
        f"({step.scope} magnitude ranking)",
        f"stored sparse (the smaller of CSR and bitmask per layer) the weights would take "
        f"{best_sparse / 1e6:.2f} MB instead of {dense_total / 1e6:.2f} MB; saved dense here",
        "dense kernels gain no speed from zeros: latency and FLOPs are those of the dense model",
    ]
    return StepOutcome(module, notes=notes, metrics=metrics)


register_step(apply_unstructured)(PruneUnstructured)


class PruneSemiStructured24(Step):
    """`prune: {method: semi_structured_2_4}`: two zeros in every four weights, CUDA kernels.

    Needs CUDA (compute capability 8.0+) and runs in fp16; layers whose shapes the sparse
    kernels reject (both sizes multiples of 64) are left dense and named in the notes.
    """

    kind = "prune"
    method: Literal["semi_structured_2_4"] = "semi_structured_2_4"


def mask_2_4(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest-magnitude weights of every four consecutive inputs."""
    groups = weight.detach().reshape(-1, 4).abs()
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.reshape(weight.shape)


def _fits_2_4_kernels(layer: nn.Linear) -> bool:
    return layer.in_features % 64 == 0 and layer.out_features % 64 == 0


class SemiStructuredLinear(nn.Module):
    """A Linear whose fp16 weight is a 2:4 sparse tensor; saved and loaded as the dense weight.

    The state dict holds the dense (masked) weight so safetensors can store it; the sparse
    tensor is rebuilt from it on load.
    """

    def __init__(self, dense: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = dense.in_features, dense.out_features
        self.weight = nn.Parameter(dense.weight.detach().half(), requires_grad=False)
        bias = dense.bias.detach().half() if dense.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self._sparse: torch.Tensor | None = None

    def _sparse_weight(self) -> torch.Tensor:
        if self._sparse is None:
            from torch.sparse import to_sparse_semi_structured

            self._sparse = to_sparse_semi_structured(self.weight.detach())
        return self._sparse

    def _load_from_state_dict(self, *args, **kwargs):
        self._sparse = None  # new dense weight: rebuild the sparse one on the next call
        return super()._load_from_state_dict(*args, **kwargs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        flat = inputs.half().reshape(-1, self.in_features)
        output = torch.nn.functional.linear(flat, self._sparse_weight(), self.bias)
        return output.reshape(*inputs.shape[:-1], self.out_features).to(inputs.dtype)


def check_cuda_for_2_4(device: str) -> None:
    """2:4 kernels exist only on CUDA, compute capability 8.0 (Ampere) or newer."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise UnsupportedOnDeviceError(
            "prune semi_structured_2_4 needs CUDA (sparse 2:4 kernels, Ampere or newer); "
            "run with --device cuda on a GPU, or use prune unstructured/structured on CPU"
        )
    if torch.cuda.get_device_capability()[0] < 8:
        raise UnsupportedOnDeviceError(
            "prune semi_structured_2_4 needs a GPU of compute capability 8.0 or newer; "
            "use prune structured on this GPU"
        )


class OnCuda(nn.Module):
    """Runs `inner` on the GPU for CPU callers: inputs go in, outputs come back to the CPU."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.cuda()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.inner(*(t.cuda() for t in inputs)).float().cpu()


def _swap_2_4(model: nn.Module, names: list[str]) -> nn.Module:
    model = model.cuda()
    for name in names:
        parent, child = get_submodule_parent(model, name)
        setattr(parent, child, SemiStructuredLinear(getattr(parent, child)))
    return OnCuda(model)


def apply_semi_structured(context, module: nn.Module, step: PruneSemiStructured24) -> StepOutcome:
    """Mask each selected Linear to 2:4 and swap in the sparse-kernel layer (CUDA)."""
    check_cuda_for_2_4(context.device)
    chosen = selected_modules(module, step.layers, (nn.Linear,))
    fitting = [(n, m) for n, m in chosen if _fits_2_4_kernels(m)]
    if not fitting:
        raise ConfigError(
            f"{step.describe()}: no selected Linear has both sizes a multiple of 64; "
            "the 2:4 kernels need that"
        )
    with torch.no_grad():
        for _, layer in fitting:
            layer.weight.mul_(mask_2_4(layer.weight))
    module = _swap_2_4(module, [n for n, _ in fitting])
    skipped = [n for n, m in chosen if not _fits_2_4_kernels(m)]
    notes = [f"2:4 semi-structured sparsity (50%) in {len(fitting)} Linear layers, fp16"]
    if skipped:
        notes.append(f"left dense (sizes not multiples of 64): {', '.join(skipped)}")
    return StepOutcome(
        module,
        rebuild=[{"op": "semi_structured_2_4", "layers": [n for n, _ in fitting]}],
        notes=notes,
        metrics={"sparse_layers": len(fitting), "dense_layers_left": len(skipped)},
    )


register_step(apply_semi_structured)(PruneSemiStructured24)


@register_rebuilder("semi_structured_2_4")
def _rebuild_2_4(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    check_cuda_for_2_4("cuda")
    return _swap_2_4(model, record["layers"])
