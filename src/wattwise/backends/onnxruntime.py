"""The ONNX Runtime backend: `torch.onnx.export` (dynamo or TorchScript exporter, the backend's
`exporter` option), deferred ONNX Runtime graph steps (fusion, quantization), and an inference
session with graph optimizations.

The variant holds one self-contained `model.onnx` (weights inside, no external data file). Graph
optimizations run when the session is created, not in the file: ONNX Runtime's "all" level
writes machine-specific graphs. `load` opens the session with the same thread count and
optimization level as at export, so the probe outputs compare bit for bit.
"""

from __future__ import annotations

import inspect
import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wattwise.backends.base import Exported, register_backend
from wattwise.backends.onnx_quantize import ONNX_QUANTIZERS
from wattwise.errors import ConfigError
from wattwise.models.onnx_model import OnnxModule, RunOptions, threads_per_stream
from wattwise.tasks.base import module_device

MODEL_FILE = "model.onnx"
EXPORT_BATCH = 2  # a batch of 1 would let the exporter specialize the batch axis to 1


def input_names(module: nn.Module, count: int) -> list[str]:
    """The model's own input names (text encoders have them), else input_0, input_1, ..."""
    names = list(getattr(module, "input_names", ()) or ())
    return names if len(names) == count else [f"input_{i}" for i in range(count)]


def dynamic_shapes(module: nn.Module, inputs: tuple[torch.Tensor, ...]):
    """Batch axis dynamic for every input; the sequence axis too for 2-D integer (token) inputs.

    A `forward(*inputs)` signature takes its shapes as one tuple, as torch.export expects.
    """
    dynamic = torch.export.Dim.DYNAMIC
    shapes = tuple(
        {0: dynamic, 1: dynamic} if t.dim() == 2 and not t.is_floating_point() else {0: dynamic}
        for t in inputs
    )
    parameters = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return (shapes,)
    return shapes


@contextmanager
def _quiet_exporter():
    # The exporter logs a warning per torchvision op it cannot find; none apply here.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def dynamic_axes(names: list[str], inputs: tuple[torch.Tensor, ...]) -> dict[str, dict]:
    """The TorchScript exporter's form of `dynamic_shapes`: batch (and sequence) axes by name."""
    axes: dict[str, dict[int, str]] = {
        name: {0: "batch", 1: "sequence"}
        if t.dim() == 2 and not t.is_floating_point()
        else {0: "batch"}
        for name, t in zip(names, inputs, strict=True)
    }
    axes["output"] = {0: "batch"}
    return axes


def export_onnx(
    module: nn.Module, task, path: Path, opset: int, exporter: str = "dynamo"
) -> list[str]:
    """Export `module` with dynamic batch (and sequence) axes to a single file; returns names.

    `exporter`: "dynamo" (torch.export, then onnxscript) or "torchscript" (`dynamo=False`).
    """
    device = module_device(module)  # a model compressed on CUDA exports from there
    inputs = tuple(t.to(device) for t in task.example_inputs(EXPORT_BATCH, "val"))
    names = input_names(module, len(inputs))
    if exporter == "torchscript":
        with _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                inputs,
                str(path),
                input_names=names,
                output_names=["output"],
                dynamic_axes=dynamic_axes(names, inputs),
                opset_version=opset,
                dynamo=False,
            )
        return names
    with _quiet_exporter():
        program = torch.onnx.export(
            module.eval(),
            inputs,
            input_names=names,
            output_names=["output"],
            dynamic_shapes=dynamic_shapes(module, inputs),
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    return names


def export_with_fallback(module: nn.Module, task, path: Path, spec) -> tuple[list[str], str, str]:
    """`export_onnx` with the recipe's exporter; when TorchScript cannot export the model
    (transformers' Llama masks use `aten::diff`, which it has no symbolic for), the dynamo
    exporter instead. Returns (input names, the exporter used, why it is not the recipe's)."""
    try:
        return export_onnx(module, task, path, spec.opset, spec.exporter), spec.exporter, ""
    except Exception as error:  # any exporter failure: the other one may still work
        if spec.exporter != "torchscript":
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        names = export_onnx(module, task, path, spec.opset, "dynamo")
        return names, "dynamo", f" (the TorchScript exporter failed: {reason})"


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """Exports to ONNX, applies deferred ONNX Runtime quantization, runs an ORT session."""

    name = "onnxruntime"
    needs_source_module = False  # model.onnx is the whole model; the source gives the task

    def export(self, module: nn.Module, context, deferred: list, directory: Path) -> Exported:
        spec = context.backend
        threads = spec.threads or torch.get_num_threads()
        step_metrics: list[dict[str, Any]] = []
        resolved: dict[int, Any] = {}
        for step in deferred:
            # A deferred step may need the PyTorch model exported differently (the transformer
            # fusion wants eager attention, which its patterns match).
            prepare = getattr(step, "prepare_export", None)
            if prepare is not None:
                module = prepare(module)
        with tempfile.TemporaryDirectory(prefix="wattwise-onnx-") as work:
            current = Path(work) / "exported.onnx"
            names, exporter, why = export_with_fallback(module, context.task, current, spec)
            notes = [
                f"backend: ONNX Runtime {_ort_version()}, graph optimizations: "
                f"{spec.optimization}, exporter: {exporter}{why}"
            ]
            for index, step in enumerate(deferred):
                quantizer = ONNX_QUANTIZERS.get(type(step))
                if quantizer is None:
                    raise ConfigError(
                        f"step {step.describe()!r} has no ONNX Runtime form; use backend eager"
                    )
                target = Path(work) / f"step{index}.onnx"
                step_notes, metrics = quantizer(context, module, step, current, target)
                resolve = getattr(step, "resolved", None)
                if resolve is not None:
                    resolved[id(step)] = resolve(metrics)
                notes.extend(step_notes)
                step_metrics.append({"step": step.describe(), **metrics})
                current = target
            shutil.copyfile(current, Path(directory) / MODEL_FILE)
        manifest = {
            "threads": threads,
            "optimization": spec.optimization,
            "opset": spec.opset,
            "exporter": exporter,
            "micro_batch": spec.micro_batch,
            "micro_batch_tokens": spec.micro_batch_tokens,
            "streams": spec.streams,
            "disabled_optimizers": list(spec.disabled_optimizers),
            "input_names": names,
            "deferred_step_metrics": step_metrics,
        }
        if spec.has_execution_plan:
            notes.append(
                f"execution plan: {spec.describe_plan()} "
                f"({threads_per_stream(threads, spec.streams)} intra-op thread(s) per stream)"
            )
        if spec.disabled_optimizers:
            notes.append(
                "ONNX Runtime graph transformers left out: " + ", ".join(spec.disabled_optimizers)
            )
        runner = OnnxModule(
            Path(directory) / MODEL_FILE, threads, spec.optimization, run_options(manifest)
        )
        return Exported(runner, [MODEL_FILE], notes, manifest, resolved)

    def load(self, directory: Path, manifest: dict[str, Any], source) -> nn.Module:
        facts = manifest["backend_manifest"]
        return OnnxModule(
            Path(directory) / MODEL_FILE,
            facts["threads"],
            facts["optimization"],
            run_options(facts),
        )


def run_options(facts: dict[str, Any]) -> RunOptions:
    """The execution plan and session options a backend manifest records (older: none)."""
    return RunOptions(
        micro_batch=facts.get("micro_batch"),
        micro_batch_tokens=facts.get("micro_batch_tokens"),
        streams=facts.get("streams", 1),
        disabled_optimizers=tuple(facts.get("disabled_optimizers", ())),
    )


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
