"""wattwise: make trained PyTorch models cheaper to run, measure what they cost, keep them up.

The Python API mirrors the CLI: `wattwise.api` has one function per command (`profile`,
`compress`, `optimize`, `serve`, `loadtest`, `train`). The ones whose names do not clash with a
subpackage are also here: `wattwise.profile`, `wattwise.optimize`, `wattwise.load_model`,
`wattwise.load_variant`. Imports are lazy so `import wattwise` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os

# Keep third-party libraries quiet and offline before any of them is imported.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# torchao logs a warning for each CUDA-only kernel library it cannot load on a CPU build, and
# torch logs a deprecation for torchao's enum registration: noise, not problems of the user's.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)

__version__ = "0.1.0"

_API = {
    "profile": "wattwise.api",
    "load_model": "wattwise.compress.variant",  # `open_model`: any spec, a variant included
    "open_model": "wattwise.compress.variant",
    "ModelOptions": "wattwise.models.registry",
    "Profile": "wattwise.measure.profile",
    "load_variant": "wattwise.compress.variant",
    "optimize": "wattwise.api",
    "loadtest": "wattwise.api",
    "loadtest_generation": "wattwise.api",
    "WattwiseError": "wattwise.errors",
}


def __getattr__(name: str):
    if name in _API:
        attribute = "open_model" if name == "load_model" else name
        return getattr(importlib.import_module(_API[name]), attribute)
    raise AttributeError(f"module 'wattwise' has no attribute {name!r}")


__all__ = sorted(_API)
