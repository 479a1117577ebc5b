"""Turning a user's input array into the tensor the model takes, in the model's input dtype.

Token ids stay integers (an Embedding needs int64/int32); everything else becomes float32 as
before. A float array cast to integers must hold whole numbers, or ids would be silently cut.
"""

from __future__ import annotations

import numpy as np
import torch

from wattwise.errors import DataError


def input_tensor(values: np.ndarray, dtype: torch.dtype | None, where: str) -> torch.Tensor:
    """`values` as a tensor of `dtype` (None: float32), refusing a lossy float → int cast."""
    dtype = dtype or torch.float32
    array = np.asarray(values)
    if dtype.is_floating_point:
        return torch.as_tensor(array.astype(np.float32)).to(dtype)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(
            f"{where}: inputs of dtype {array.dtype} cannot be {dtype} ids; save integer arrays"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0):
        raise DataError(
            f"{where}: the model takes {dtype} ids but the inputs hold fractions; save whole "
            "numbers (np.int64) or pass --input-dtype float32"
        )
    return torch.as_tensor(array.astype(np.int64)).to(dtype)
