"""FLOPs per sample, counted by torch.utils.flop_counter on one real input."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int | None:
    """FLOPs of one forward pass over `inputs` divided by the batch size; None if not countable.

    The counter sees matmuls, convolutions and attention (2 FLOPs per multiply-add); element-wise
    ops are not counted, as in torch's own counter.
    """
    batch = inputs[0].shape[0] if inputs and inputs[0].dim() else 1
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            module(*inputs)
        total = int(counter.get_total_flops() // batch)
    except Exception:  # noqa: BLE001 - quantized or foreign kernels the counter cannot see
        return None
    # Zero means the counter saw no matmul/conv at all (an ONNX session, opaque kernels):
    # report "not countable" rather than a false 0.
    return total or None
