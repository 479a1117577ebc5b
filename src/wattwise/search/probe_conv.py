"""The probe's convolution half: for models whose work is in nn.Conv2d (CNNs), time the dominant
convolution through the paths candidates take.

The Linear probe speaks for the Linear share of a model's FLOPs only, which is about nothing for
a CNN: every path's prior came out 1.00x, and a 90 s search of a small ResNet-style model ran
five dynamic-int8 candidates (which leave convolutions in fp32) before ONNX Runtime's static
int8 (QLinearConv), which it then had no time left to start. Here the convolution of the most
FLOPs is timed in fp32 and bf16 eager PyTorch, ONNX Runtime fp32 and ONNX Runtime static int8
(QDQ, per-channel weights, calibrated on the probe's own input).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from wattwise.search.probe_onnx import onnx_layer_runs

MAX_PROBE_BATCH = 8  # images per timed call: a 224-pixel ResNet layer stays in milliseconds


@dataclass(frozen=True)
class ConvShape:
    """One Conv2d configuration and the input size it sees."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    height: int
    width: int

    def layer(self) -> nn.Conv2d:
        """A fresh (seeded) layer of this shape, in eval mode."""
        torch.manual_seed(0)
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            groups=self.groups,
        )
        return conv.eval()

    def text(self) -> str:
        """'64→128 3×3 /1 on 32×32' for reports."""
        kernel = "×".join(map(str, self.kernel_size))
        groups = f" groups {self.groups}" if self.groups > 1 else ""
        return (
            f"{self.in_channels}→{self.out_channels} {kernel} /{self.stride[0]}{groups} "
            f"on {self.height}×{self.width}"
        )


def conv_work(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[ConvShape, int] | None:
    """(the Conv2d shape holding the most FLOPs, FLOPs of every Conv2d) for one sample, from
    forward hooks; None when no Conv2d runs."""
    flops: Counter[ConvShape] = Counter()

    def record(layer: nn.Conv2d, args, output) -> None:
        _, _, height, width = args[0].shape
        shape = ConvShape(
            layer.in_channels,
            layer.out_channels,
            tuple(layer.kernel_size),
            tuple(layer.stride),
            tuple(layer.padding) if not isinstance(layer.padding, str) else (0, 0),
            layer.groups,
            int(height),
            int(width),
        )
        per_output = 2 * (layer.in_channels // layer.groups) * shape.kernel_size[0]
        flops[shape] += per_output * shape.kernel_size[1] * output[:1].numel()

    handles = [
        layer.register_forward_hook(record)
        for layer in module.modules()
        if isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str)
    ]
    try:
        with torch.inference_mode():
            module(*(t[:1] for t in inputs))
    finally:
        for handle in handles:
            handle.remove()
    if not flops:
        return None
    return flops.most_common(1)[0][0], sum(flops.values())


def conv_paths(layer: nn.Conv2d, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """bf16 eager, ONNX Runtime fp32 and ONNX Runtime static int8 (QDQ) runs of `layer`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class OneBatch(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": x.numpy()}])

        def get_next(self):
            return next(self.batches, None)

    def static_int8(source: str, target: str) -> None:
        quantize_static(
            source,
            target,
            OneBatch(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )

    bf16_layer, bf16_x = _bf16_copy(layer), x.bfloat16()
    paths: dict[str, Callable[[], object]] = {"torch_bf16": lambda: bf16_layer(bf16_x)}
    return paths | onnx_layer_runs(layer, x, static_int8, ("ort_fp32", "ort_int8_static"))


def _bf16_copy(layer: nn.Conv2d) -> nn.Conv2d:
    import copy

    return copy.deepcopy(layer).bfloat16()


def probe_input(shape: ConvShape, batch: int) -> torch.Tensor:
    """Random input of the layer's size, at most MAX_PROBE_BATCH images."""
    torch.manual_seed(0)
    count = max(1, min(batch, MAX_PROBE_BATCH))
    return torch.randn(count, shape.in_channels, shape.height, shape.width)
