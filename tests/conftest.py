"""Test-wide set-up: private cache and home dirs, the `gpu` marker skip, xdist groups.

Under pytest-xdist (`make test` runs `-n 2 --dist loadscope`) every test module stays on one
worker (its module-scoped fixtures, such as a server or a search, are built once), the two most
process-heavy modules (the Ray server, torchrun) share one work unit so they never run side by
side, and the longest work units start first. The digits-cnn model is trained once, before the
workers start, into the cache they share.
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
# Two xdist workers share the cores: one intra-op thread each. With torch's default (a thread
# per core) in both, their OpenMP threads oversubscribe the cores and wait on each other: the
# optimize module's search took 85 s instead of 9.5 s when two ran side by side on 2 cores
# (2026-12-04). Child processes (CLIs, clients, Ray workers) inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
# Every Ray the tests start (serving, Flower's simulation) waits up to 120 s, not 30 s, for its
# GCS to start: two Ray instances starting side by side on 2 cores once took longer.
os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
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
# The longest xdist groups, longest first (seconds measured on a 2-core machine, 2026-12-04,
# one intra-op thread per worker): they start first, so no long module is left to run alone on
# one worker at the end while the other idles (longest-first scheduling; `--durations` shows
# when this list needs updating).
LONGEST_GROUPS_FIRST = (
    "processes",  # ~200 s
    "tests/serve/test_autoscaling.py",  # ~95 s
    "tests/federate/test_modes.py",  # ~80 s
    "tests/serve/test_two_nodes.py",  # ~65 s
    "tests/train/test_failover.py",  # ~60 s
    "tests/serve/test_generation_serving.py",  # ~45 s, its own Ray instance
    "tests/compress/test_backends.py",  # ~45 s
    "tests/search/test_optimize.py",  # ~50 s
    "tests/batch/test_batch.py",  # ~35 s
)


def pytest_configure(config):
    """With xdist, train digits-cnn once in the controller so the workers share the cache."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        from wattwise.models.digits import load_digits_cnn

        load_digits_cnn()


def _group(nodeid: str) -> str:
    """The xdist work unit of a test: its module, or "processes" for the process-heavy ones."""
    path = nodeid.split("::")[0]
    return "processes" if path in PROCESS_HEAVY_MODULES else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Whole work units per worker (see `_group`), in collection order.

    Written here because xdist 3.8's own `--dist loadgroup` groups nothing under pytest 9: it
    renames `item._nodeid`, which pytest 9 no longer reads, so every test went to any worker,
    module fixtures (a Ray server, a search) were built once per worker, side by side.
    """
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ModuleGroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA; run the longest work units first (file order kept within
    each; `make test` passes --no-loadscope-reorder so xdist keeps this order)."""
    import torch

    rank = {group: index for index, group in enumerate(LONGEST_GROUPS_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.nodeid), len(rank)))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
