"""What the quantization steps share: picking an implementation, the layers touched, the bytes
those layers take before and after, and calibration samples from the task's data."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from wattwise.compress.steps.base import LayerSelection, selected_modules
from wattwise.errors import ConfigError, UnsupportedOnDeviceError

IMPLEMENTATIONS = ("auto", "torchao", "torch_ao", "onnxruntime")


def resolve_implementation(implementation: str, backend_name: str) -> str:
    """`auto` → onnxruntime on the onnxruntime backend (applied at export), else torch_ao.

    torch.ao's fbgemm kernels are the int8 path that is fast on CPUs without VNNI; torchao's
    int8 configs ran 3–20x slower than fp32 here (../shared/FIELD-NOTES.md).
    """
    if implementation == "auto":
        return "onnxruntime" if backend_name == "onnxruntime" else "torch_ao"
    if implementation == "onnxruntime" and backend_name != "onnxruntime":
        raise ConfigError(
            "implementation onnxruntime is applied by the onnxruntime backend; set "
            "'backend: onnxruntime' or use implementation torch_ao/torchao"
        )
    if implementation != "onnxruntime" and backend_name == "onnxruntime":
        raise ConfigError(
            f"implementation {implementation} quantizes in PyTorch, which ONNX export cannot "
            "carry; use implementation auto (ONNX Runtime quantizes) or backend eager"
        )
    return implementation


def require_cuda(context, what: str, instead: str) -> None:
    """Raise UnsupportedOnDeviceError unless the run is on a CUDA device that exists."""
    if not (context.device.startswith("cuda") and torch.cuda.is_available()):
        raise UnsupportedOnDeviceError(f"{what} needs CUDA (run with --device cuda); {instead}")


def selected_names(
    model: nn.Module, selection: LayerSelection, default_types: tuple[type, ...] = (nn.Linear,)
) -> list[str]:
    """Fully qualified names of the layers a step touches; none selected is an error."""
    names = [name for name, _ in selected_modules(model, selection, default_types)]
    if not names:
        kinds = ", ".join(t.__name__ for t in default_types)
        raise ConfigError(
            f"the layer selection {selection.model_dump(exclude_defaults=True)} matches no "
            f"{kinds} layer; loosen 'layers' (include/exclude globs, module_types)"
        )
    return names


def calibration_batches(task, samples: int, batch_size: int, seed: int) -> Iterator[tuple]:
    """Model inputs of `samples` training samples in batches (the last one may be smaller).

    Training data, never test data, so calibration does not see what the profile scores.
    """
    remaining = samples
    for batch in task.training_batches(batch_size, seed=seed):
        if remaining <= 0:
            return
        inputs = batch.inputs
        if remaining < len(inputs[0]):
            inputs = tuple(t[:remaining] for t in inputs)
        remaining -= len(inputs[0])
        yield inputs
