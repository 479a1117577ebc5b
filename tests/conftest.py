"""Test-wide set-up: private cache and home dirs, the `gpu` marker skip, xdist groups.

Under pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) every test module stays on one
worker (its module-scoped fixtures, such as a server or a search, are built once), and the
modules that start Ray share one group so two Ray instances never start side by side. The
digits-cnn model is trained once, before the workers start, into the cache they share.
"""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

# One private cache per test run: the first digits-cnn request trains it (tests that path), later
# ones reuse it. HOME and the inductor cache go to temp dirs so tests never touch the user's.
_RUN_DIR = tempfile.mkdtemp(prefix="wattwise-tests-")
os.environ.setdefault("WATTWISE_CACHE", os.path.join(_RUN_DIR, "cache"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_RUN_DIR, "inductor"))
os.environ["HOME"] = os.path.join(_RUN_DIR, "home")
os.makedirs(os.environ["HOME"], exist_ok=True)
# tiny-lm in tests: the "test" preset (a 4-layer, 32-wide GPT-2 trained for 30 steps).
os.environ.setdefault("WATTWISE_TINY_LM_PRESET", "test")
# A suite started in the background (`make test &`, nohup, some CI runners) inherits an ignored
# SIGINT, and so would every CLI the tests start: Python then installs no KeyboardInterrupt and
# the Ctrl-C tests see exit 0 instead of 130. The tests stand in for a user at a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# Energy counters differ between machines; tests that need the estimate say so explicitly.


# Modules that start many processes (a Ray instance, torchrun): one worker, one at a time.
PROCESS_HEAVY_MODULES = ("tests/serve/test_server.py", "tests/train/test_distributed.py")


def pytest_configure(config):
    """With xdist, train digits-cnn once in the controller so the workers share the cache."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from wattwise.models.digits import load_digits_cnn

        load_digits_cnn()


def _xdist_group(item) -> str:
    path = item.nodeid.split("::")[0]
    return "processes" if path in PROCESS_HEAVY_MODULES else path


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA; give each test its xdist group (see the docstring)."""
    import torch

    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
