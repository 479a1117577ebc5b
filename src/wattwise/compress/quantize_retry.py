"""Quantize, run the result once, and leave out the layers that break the model.

Some models fail only after quantization, and only when run: torch.ao's `quantize_dynamic` on
`nn.TransformerEncoder` swaps `linear1`/`linear2`/`self_attn.out_proj` for modules whose
`.weight` is a method, and the encoder layer's fast path then fails with "'function' object
has no attribute 'device'" (it reads `.weight.device`). So after quantizing we run a probe
batch; on failure we find the layers to leave out from the traceback (every quantized layer
inside the innermost module of the model whose code raised), or, when the traceback names no
such module, by quantizing one layer at a time. The reduced layer list goes into the rebuild
record, so the variant replays exactly; the step's notes and metrics say what was left out
and why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn

from wattwise.compress.torch_quantize import quantize_with_record
from wattwise.errors import ConfigError, WattwiseError
from wattwise.tasks.base import module_device

LEFT_OUT_NOTE = "left out of quantization"
# Above this many layers, one-at-a-time isolation costs more than it is worth.
MAX_ISOLATED_LAYERS = 256


@dataclass
class LeftOut:
    """Layers left unquantized because the model failed with them quantized.

    Attributes:
        layers: fully qualified names of the layers left out.
        failed_in: the module whose code raised ("" when found by isolation).
        error: the failure, as "Type: message" (first line).
    """

    layers: list[str]
    failed_in: str
    error: str

    def describe(self) -> str:
        """'a.b, a.c (in a: AttributeError: ...)'."""
        where = f"in {self.failed_in}" if self.failed_in else "each fails alone"
        return f"{', '.join(self.layers)} ({where}: {self.error})"


def _error_text(error: BaseException) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"


def run_probe(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """One forward pass as the profile runs it (eval, inference mode)."""
    with torch.inference_mode():
        module.eval()(*inputs)


def _module_frames(traceback: TracebackType | None) -> list[nn.Module]:
    """The `self` of every traceback frame that is an nn.Module, outermost first."""
    modules = []
    while traceback is not None:
        owner = traceback.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            modules.append(owner)
        traceback = traceback.tb_next
    return modules


def layers_to_leave_out(
    model: nn.Module, error: BaseException, layers: list[str]
) -> tuple[list[str], str]:
    """The quantized layers inside the innermost module of `model` whose code raised.

    Returns (layers, that module's name); ([], "") when no frame belongs to such a module.
    """
    names = {id(m): name for name, m in model.named_modules()}
    for owner in reversed(_module_frames(error.__traceback__)):
        name = names.get(id(owner))
        if not name:  # not in the model, or the model itself (which names no culprit)
            continue
        inside = [layer for layer in layers if layer == name or layer.startswith(name + ".")]
        if inside:
            return inside, f"{name} ({type(owner).__name__})"
    return [], ""


Attempt = Callable[[nn.Module, list[str]], nn.Module]


def _isolate(pristine: nn.Module, layers: list[str], attempt: Attempt) -> tuple[list[str], str]:
    """Quantize each layer alone; the ones that fail alone are left out."""
    if len(layers) > MAX_ISOLATED_LAYERS:
        return [], ""
    failing, last_error = [], ""
    for layer in layers:
        try:
            attempt(copy.deepcopy(pristine), [layer])
        except WattwiseError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of the third-party quantizer
            failing.append(layer)
            last_error = _error_text(error)
    return failing, last_error


def quantize_leaving_out_breakers(
    module: nn.Module, record: dict[str, Any], probe_inputs: tuple[torch.Tensor, ...]
) -> tuple[nn.Module, dict[str, Any], dict[str, Any], list[LeftOut]]:
    """Quantize `module` as `record` says; retry without the layers that make it fail.

    Returns (quantized module, the record actually applied, size metrics, what was left out).
    ConfigError when every selected layer breaks the model.
    """
    device = record.get("device", "cpu")
    probe = tuple(t.to(device) for t in probe_inputs)
    metrics: dict[str, Any] = {}

    def attempt(model: nn.Module, layers: list[str]) -> nn.Module:
        quantized, found = quantize_with_record(model, {**record, "layers": layers})
        metrics.clear()
        metrics.update(found)
        run_probe(quantized, probe)
        return quantized

    pristine = copy.deepcopy(module)
    layers = list(record["layers"])
    left_out: list[LeftOut] = []
    candidate = module
    while True:
        try:
            quantized = attempt(candidate, layers)
            return quantized, {**record, "layers": layers}, dict(metrics), left_out
        except WattwiseError:
            raise
        except Exception as error:  # any failure of the third-party quantizer
            if not left_out:  # when the unquantized model fails too, the failure is not ours
                home = module_device(pristine)
                run_probe(pristine, tuple(t.to(home) for t in probe_inputs))
            culprits, failed_in = layers_to_leave_out(candidate, error, layers)
            text = _error_text(error)
            if not culprits:
                culprits, isolated_error = _isolate(pristine, layers, attempt)
                failed_in, text = "", isolated_error or text
            if not culprits or len(culprits) == len(layers):
                raise ConfigError(
                    f"quantizing {len(layers)} layers breaks the model ({text}) and no subset "
                    "could be left out to fix it; exclude layers in the step's 'layers' or use "
                    "backend onnxruntime"
                ) from error
            left_out.append(LeftOut(culprits, failed_in, text))
            layers = [layer for layer in layers if layer not in culprits]
            candidate = copy.deepcopy(pristine)


def left_out_report(left_out: list[LeftOut], kept: int) -> tuple[list[str], dict[str, Any]]:
    """Notes and metrics for a step that left layers out (nothing when none were)."""
    if not left_out:
        return [], {}
    names = [layer for entry in left_out for layer in entry.layers]
    note = (
        f"{LEFT_OUT_NOTE}: {len(names)} layers that broke the model when quantized, "
        f"{kept} quantized — " + "; ".join(entry.describe() for entry in left_out)
    )
    return [note], {"layers_left_out": names, "left_out": [asdict(e) for e in left_out]}
