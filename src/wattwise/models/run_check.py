"""Run a user's model once on a small batch at load time, so a failure inside it becomes one line.

A model that cannot run on the inputs it was given (a wrong `--input-shape`, data with the
wrong number of features, a forward that raises) would otherwise fail deep inside a profile or
a compression step with a library traceback. One forward of two samples here names the model,
the input shapes and dtypes, and what to change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from wattwise.errors import ModelRunError

CHECK_BATCH = 2


def describe_inputs(inputs: Sequence[Any]) -> str:
    """'(2, 32) float32' for one tensor, '(2, 16) int64 + (2, 16) int64' for several."""
    parts = []
    for tensor in inputs:
        if isinstance(tensor, torch.Tensor):
            dtype = str(tensor.dtype).removeprefix("torch.")
            parts.append(f"{tuple(tensor.shape)} {dtype}")
        else:
            parts.append(type(tensor).__name__)
    return " + ".join(parts) or "no inputs"


def first_line(error: BaseException) -> str:
    """The exception's type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def run_once(model_name: str, forward: Callable[..., Any], inputs: Sequence[Any], fix: str) -> Any:
    """`forward(*inputs)` without gradients; any exception becomes ModelRunError naming `fix`."""
    try:
        with torch.inference_mode():
            return forward(*inputs)
    except Exception as error:
        raise ModelRunError(
            f"model {model_name} failed on inputs of shape {describe_inputs(inputs)} "
            f"({first_line(error)}); {fix}"
        ) from error


def check_model_runs(name: str, module: Callable[..., Any], task: Any, fix: str) -> None:
    """One forward of a small test batch from `task`; raise ModelRunError when it fails.

    For a user's labelled data scored by accuracy, also checks every label indexes an output.
    """
    from wattwise.tasks.data_checks import check_label_range

    inputs = task.example_inputs(CHECK_BATCH, "test")
    outputs = run_once(name, module, inputs, fix)
    labels = getattr(task, "labels", None)
    if getattr(task, "metric_name", None) == "accuracy" and labels is not None:
        if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2:
            raise ModelRunError(
                f"model {name} returned {getattr(outputs, 'shape', type(outputs).__name__)} "
                "for a batch, not (batch, classes) scores; use --metric mse or fidelity"
            )
        check_label_range(getattr(task, "source_path", name), labels.numpy(), outputs.shape[-1])
