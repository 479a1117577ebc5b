"""Backends: where a variant runs (eager PyTorch, torch.compile, ONNX Runtime).

Each module registers its backend when imported. Adding a backend: one module in this package
and one import line below.
"""

from wattwise.backends import eager, onnxruntime, torch_compile  # noqa: F401  (registration)
from wattwise.backends.base import (
    BACKENDS,
    Backend,
    Exported,
    check_backend_name,
    get_backend,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "Exported",
    "check_backend_name",
    "get_backend",
    "register_backend",
]
