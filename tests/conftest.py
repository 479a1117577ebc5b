"""Test-wide set-up: private cache and home dirs, the `gpu` marker skip."""

from __future__ import annotations

import os
import tempfile

import pytest

# One private cache per test run: the first digits-cnn request trains it (tests that path), later
# ones reuse it. HOME and the inductor cache go to temp dirs so tests never touch the user's.
_RUN_DIR = tempfile.mkdtemp(prefix="wattwise-tests-")
os.environ.setdefault("WATTWISE_CACHE", os.path.join(_RUN_DIR, "cache"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_RUN_DIR, "inductor"))
os.environ["HOME"] = os.path.join(_RUN_DIR, "home")
os.makedirs(os.environ["HOME"], exist_ok=True)
# Energy counters differ between machines; tests that need the estimate say so explicitly.


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests when CUDA is not available."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
