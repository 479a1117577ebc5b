"""Gradient checkpointing: the switch, and a measurement of the activation memory it saves.

Checkpointing keeps only each segment's inputs in the forward pass and recomputes the rest during
backward (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"). Hugging Face models
use their own `gradient_checkpointing_enable`; any other module gets each top-level child wrapped
in `torch.utils.checkpoint.checkpoint` (non-reentrant), which keeps state-dict keys unchanged.

The saving is measured, not assumed: `measure_activation_memory` counts the bytes autograd saves
for backward during one forward pass (through `torch.autograd.graph.saved_tensors_hooks`), with
and without checkpointing, on a real batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from wattwise.fit.precision import autocast_context
from wattwise.tasks.base import TrainingBatch

_MARK = "_wattwise_checkpointed"


class _SavedBytesCounter:
    """Counts distinct tensor storages saved for backward while active."""

    active: _SavedBytesCounter | None = None

    def __init__(self) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.bytes = 0

    def add(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in self.seen:
            self.seen.add(key)
            self.bytes += storage.nbytes()


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return (
        model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model
    )


def enable_gradient_checkpointing(model: nn.Module) -> str:
    """Turn gradient checkpointing on in place (idempotent); returns how it was applied."""
    model = _unwrap(model)
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing_enable") and hasattr(module, "config"):
            if not getattr(module, "is_gradient_checkpointing", False):
                module.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            return "huggingface gradient_checkpointing_enable (per transformer layer)"
    children = list(model.children()) or [model]
    for child in children:
        if getattr(child, _MARK, False):
            continue
        original = child.forward

        @functools.wraps(original)
        def forward(*args, _original=original, **kwargs):
            if not torch.is_grad_enabled():
                return _original(*args, **kwargs)
            counter = _SavedBytesCounter.active
            if counter is not None:  # the segment inputs are what checkpointing keeps
                for value in args:
                    counter.add(value)
            return checkpoint(_original, *args, use_reentrant=False, **kwargs)

        child.forward = forward
        setattr(child, _MARK, True)
    return f"torch.utils.checkpoint around {len(children)} top-level module(s)"


def disable_gradient_checkpointing(model: nn.Module) -> None:
    """Undo `enable_gradient_checkpointing`."""
    model = _unwrap(model)
    for module in model.modules():
        if hasattr(module, "gradient_checkpointing_disable") and hasattr(module, "config"):
            module.gradient_checkpointing_disable()
            return
    for child in list(model.children()) or [model]:
        if getattr(child, _MARK, False):
            del child.forward  # the instance attribute shadowed the class's forward
            delattr(child, _MARK)


@dataclass(frozen=True)
class ActivationMemory:
    """Activation memory of one forward pass, without and with gradient checkpointing.

    Attributes:
        bytes_without: bytes saved for backward with checkpointing off.
        bytes_with: the same with checkpointing on (segment inputs included).
        applied: how checkpointing was applied.
        method: how the bytes were counted.
    """

    bytes_without: int
    bytes_with: int
    applied: str
    method: str = "distinct tensor storages saved for backward (saved_tensors_hooks), one batch"

    @property
    def saving_pct(self) -> float:
        """Percent of activation memory saved by checkpointing."""
        if self.bytes_without <= 0:
            return 0.0
        return 100.0 * (1.0 - self.bytes_with / self.bytes_without)

    def describe(self) -> str:
        """One line for the console."""
        return (
            f"gradient checkpointing: activation memory {self.bytes_without / 1e6:.2f} MB → "
            f"{self.bytes_with / 1e6:.2f} MB ({self.saving_pct:.0f}% saved; {self.applied}; "
            f"measured as {self.method})"
        )


def _saved_bytes(
    model: nn.Module,
    batch: TrainingBatch,
    loss_fn: Callable[[nn.Module, TrainingBatch], torch.Tensor],
    autocast,
) -> int:
    counter = _SavedBytesCounter()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        counter.add(tensor)
        return tensor

    _SavedBytesCounter.active = counter
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast():
            loss = loss_fn(model, batch)
        del loss  # drops the graph; nothing is kept from the measurement
    finally:
        _SavedBytesCounter.active = None
    return counter.bytes


def measure_activation_memory(
    model: nn.Module,
    batch: TrainingBatch,
    loss_fn: Callable[[nn.Module, TrainingBatch], torch.Tensor],
    precision: str = "fp32",
) -> ActivationMemory:
    """Count activation bytes with checkpointing off and on; leaves checkpointing ON.

    RNG states are forked so the measurement does not change what training does next.
    """
    inner = _unwrap(model)
    device_type = next((p.device.type for p in inner.parameters()), "cpu")
    was_training = inner.training
    inner.train()
    try:
        with torch.random.fork_rng(devices=[]):
            disable_gradient_checkpointing(inner)
            autocast = functools.partial(autocast_context, precision, device_type)
            without = _saved_bytes(inner, batch, loss_fn, autocast)
            applied = enable_gradient_checkpointing(inner)
            with_checkpointing = _saved_bytes(inner, batch, loss_fn, autocast)
    finally:
        inner.train(was_training)
    return ActivationMemory(without, with_checkpointing, applied)
