"""Mixed-precision autocast, shared by the training loop and the activation-memory probe."""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast_context(precision: str, device_type: str):
    """The autocast context for a precision, or a no-op for fp32."""
    if precision == "fp32":
        return torch.autocast(device_type=device_type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)
