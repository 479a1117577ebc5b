"""Replicating checkpoints to N stores, synchronously or in the background.

`sync`: `save` returns only once every replica has the checkpoint durable. The data files go to
every replica first and the manifests after (two phases), so a manifest anywhere implies the data
is durable everywhere: a step acknowledged by `save` cannot be lost while one replica survives.

`async`: `save` puts the in-memory snapshot on a bounded queue and returns; a background thread
encodes, writes and commits it. What is not yet on every replica is the possible loss window,
measured as `lag` (steps and seconds) and reported. A full queue blocks `save` (back-pressure,
so the window stays bounded by `(queue_size + 1) × interval` steps).

Before any manifest is written the writer's lease epoch is checked against the lease and against
each replica's FENCE file: a primary that was replaced stops before it commits anything.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from wattwise.errors import ConfigError
from wattwise.train.checkpoint import Snapshot, encode, make_manifest
from wattwise.train.journal import Journal
from wattwise.train.lease import FencedError
from wattwise.train.store import (
    MANIFEST,
    CheckpointError,
    CheckpointStore,
    DiskFullError,
    ReplicaUnreachableError,
    checkpoint_name,
    step_of,
)

MODES = ("sync", "async")
FAILURE_POLICIES = ("fail", "degrade")


@dataclass(frozen=True)
class CheckpointEvent:
    """One checkpoint as the primary saw it.

    Attributes:
        step: the checkpoint's step.
        mode: "sync" or "async".
        stall_s: seconds the training loop waited in `save` (queueing or writing).
        persist_s: seconds to encode and commit on every replica (NaN for async: not known when
            `save` returns; the background worker logs it).
        replicas_committed: replicas that hold it committed.
        lag_steps: steps snapshotted but not yet on every replica, when it was logged.
        lag_s: age in seconds of the oldest snapshot not yet on every replica.
    """

    step: int
    mode: str
    stall_s: float
    persist_s: float
    replicas_committed: int
    lag_steps: int
    lag_s: float


@dataclass(frozen=True)
class Lag:
    """What is not yet on every replica: steps and seconds (the possible loss window)."""

    steps: int
    seconds: float


class Replicator:
    """Commits snapshots to every store, in the caller's thread (sync) or a worker (async)."""

    def __init__(
        self,
        stores: list[CheckpointStore],
        mode: str = "sync",
        keep_last: int = 3,
        queue_size: int = 2,
        on_replica_failure: str = "fail",
        epoch: int = 0,
        lease_check: Callable[[], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown replication {mode!r}: use sync or async")
        if on_replica_failure not in FAILURE_POLICIES:
            raise ConfigError(
                f"unknown on_replica_failure {on_replica_failure!r}: use fail or degrade"
            )
        if not stores:
            raise ConfigError("no replicas: give at least one directory or URL under replicas")
        self.stores = list(stores)
        self.mode = mode
        self.keep_last = max(1, keep_last)
        self.on_replica_failure = on_replica_failure
        self.epoch = epoch
        self.lease_check = lease_check or (lambda: None)
        self.log = log or (lambda message: None)
        self.degraded: set[str] = set()
        self.durable_step = 0
        self.max_lag = Lag(0, 0.0)
        self._pending: deque[tuple[int, float]] = deque()  # (step, taken_unix) not yet everywhere
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._stopping = False
        self._queue: queue.Queue[Snapshot | None] = queue.Queue(maxsize=max(1, queue_size))
        self._pool = ThreadPoolExecutor(max_workers=len(self.stores))
        self._worker: threading.Thread | None = None
        if mode == "async" or on_replica_failure == "degrade":
            self._worker = threading.Thread(
                target=self._drain, name="wattwise-replicator", daemon=True
            )
            self._worker.start()

    # ---- the training loop's side ------------------------------------------------------------
    def save(self, snap: Snapshot) -> CheckpointEvent:
        """Commit (sync) or enqueue (async) a snapshot; returns its event once the loop may go on."""
        self.raise_background_error()
        started = time.perf_counter()
        with self._lock:
            self._pending.append((snap.step, snap.taken_unix))
        if self.mode == "sync":
            committed = self._commit(snap, self._sync_stores(), sync=True)
            if self.degraded:  # the degraded replicas catch up in the background
                self._queue.put(snap)
            else:
                self._mark_durable(snap.step)
            stall = time.perf_counter() - started
            return self._event(snap.step, stall, stall, committed)
        self._queue.put(snap)  # blocks when full: back-pressure bounds the loss window
        stall = time.perf_counter() - started
        return self._event(snap.step, stall, float("nan"), 0)

    def lag(self) -> Lag:
        """Acknowledged snapshots not yet on every replica: the possible loss window right now.

        Steps: newest acknowledged snapshot step − newest step durable everywhere; seconds: age of
        the oldest such snapshot. Always 0 in sync mode once `save` has returned (unless a replica
        was degraded). The largest value seen is kept in `max_lag`.
        """
        with self._lock:
            lag = self._lag_unlocked()
            if lag.steps > self.max_lag.steps or lag.seconds > self.max_lag.seconds:
                self.max_lag = Lag(
                    max(lag.steps, self.max_lag.steps), max(lag.seconds, self.max_lag.seconds)
                )
            return lag

    def raise_background_error(self) -> None:
        """Re-raise a failure of the background writer in the training loop's thread."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self, timeout_s: float = 120.0) -> None:
        """Wait until everything queued is committed, then stop the worker."""
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout_s)
            self._worker = None
        self._pool.shutdown(wait=True)
        self.raise_background_error()

    def stop_now(self) -> None:
        """Abandon queued snapshots without waiting (the run failed or was fenced); never raises."""
        self._stopping = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._worker is not None:
            self._queue.put_nowait(None)
            self._worker = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- committing ----------------------------------------------------------------------------
    def _sync_stores(self) -> list[CheckpointStore]:
        return [s for s in self.stores if s.url not in self.degraded]

    def _event(self, step: int, stall: float, persist: float, committed: int) -> CheckpointEvent:
        lag = self.lag()
        return CheckpointEvent(step, self.mode, stall, persist, committed, lag.steps, lag.seconds)

    def _mark_durable(self, step: int) -> None:
        with self._lock:
            self.durable_step = max(self.durable_step, step)
            while self._pending and self._pending[0][0] <= step:
                self._pending.popleft()

    def _lag_unlocked(self) -> Lag:
        if not self._pending:
            return Lag(0, 0.0)
        return Lag(self._pending[-1][0] - self.durable_step, time.time() - self._pending[0][1])

    def _check_fence(self, store: CheckpointStore) -> None:
        self.lease_check()
        fence = store.read_fence()
        if fence > self.epoch:
            raise FencedError(
                f"replica {store.url} was fenced at lease epoch {fence}, newer than this primary's "
                f"{self.epoch}: another primary took over; stopping before writing"
            )

    def _commit(self, snap: Snapshot, stores: list[CheckpointStore], sync: bool) -> int:
        """Two phases: data files on every store, then manifests. Returns stores committed."""
        files = encode(snap)
        manifest = make_manifest(snap.step, files, self.epoch)
        name = checkpoint_name(snap.step)

        def write_data(store: CheckpointStore) -> None:
            self._check_fence(store)
            store.remove_file(name, MANIFEST)  # un-commit before rewriting the same step
            for filename, data in files.items():
                store.write_file(name, filename, data)

        def write_manifest(store: CheckpointStore) -> None:
            self._check_fence(store)
            store.write_file(name, MANIFEST, manifest)
            try:  # a pause between the check and the write must not leave a stale commit behind
                self._check_fence(store)
            except FencedError:
                store.remove_file(name, MANIFEST)
                raise

        good = self._run_on(stores, write_data, snap.step, sync)
        good = self._run_on(good, write_manifest, snap.step, sync)
        for store in good:
            self._prune(store)
        return len(good)

    def _run_on(self, stores, action, step: int, sync: bool) -> list[CheckpointStore]:
        """Run `action` on every store in parallel; apply the failure policy to errors."""
        futures = [(store, self._pool.submit(action, store)) for store in stores]
        good, failed = [], []
        for store, future in futures:
            try:
                future.result()
                good.append(store)
            except FencedError:
                raise
            except CheckpointError as error:
                failed.append((store, error))
        for store, error in failed:
            if isinstance(error, DiskFullError) or not sync:
                if sync or not good:
                    raise error
                self.log(f"warning: step {step} not on replica {store.url} yet: {error}")
                continue
            if self.on_replica_failure == "fail":
                raise ReplicaUnreachableError(
                    f"sync replication of step {step} failed: {error} (set on_replica_failure: "
                    "degrade to continue on the other replicas with this one async)"
                ) from error
            if store.url not in self.degraded:
                self.degraded.add(store.url)
                self.log(
                    f"warning: replica {store.url} failed ({error}); replication to it degraded "
                    "to async as configured (on_replica_failure: degrade): steps acknowledged "
                    "now are durable on the other replicas only until it catches up"
                )
        if not good:
            raise ReplicaUnreachableError(f"step {step}: no replica could be written")
        return good

    def _prune(self, store: CheckpointStore) -> None:
        """Keep the newest `keep_last` committed checkpoints and drop older leftovers."""
        try:
            names = store.list_checkpoints()
            committed = [n for n in names if store.exists(n, MANIFEST)]
            keep = set(committed[: self.keep_last])
            oldest_kept = min((step_of(n) for n in keep), default=0)
            for name in names:
                if name not in keep and step_of(name) < oldest_kept:
                    store.remove_checkpoint(name)
        except CheckpointError as error:  # pruning is housekeeping: never fail a step for it
            self.log(f"warning: could not prune old checkpoints on {store.url}: {error}")

    # ---- the background worker -----------------------------------------------------------------
    def _drain(self) -> None:
        while True:
            snap = self._queue.get()
            if snap is None or self._stopping:
                return
            started = time.perf_counter()
            stores = (
                self.stores
                if self.mode == "async"
                else [s for s in self.stores if s.url in self.degraded]
            )
            try:
                committed = self._commit(snap, stores, sync=False)
            except BaseException as error:  # noqa: BLE001 - surfaced in the training loop's thread
                catching_up = self.mode == "sync" and not isinstance(error, FencedError)
                if not catching_up:  # a degraded replica that is still down is only reported
                    self._error = error
                self.log(f"warning: background replication of step {snap.step} failed: {error}")
                continue
            if committed == len(stores):
                self._mark_durable(snap.step)
                if self.degraded and self.mode == "sync":
                    self.degraded.clear()
                    self.log("replication: every replica caught up; back to sync for all")
            if self.mode == "async":
                persist = time.perf_counter() - started
                lag = self.lag()
                self.log(
                    f"async checkpoint step {snap.step} on {committed}/{len(stores)} replicas in "
                    f"{persist:.3f} s; lag {lag.steps} steps / {lag.seconds:.2f} s"
                )


def fence_replicas(stores: list[CheckpointStore], epoch: int, settings, journal: Journal) -> None:
    """Record the new epoch on every replica so an older primary stops before committing there."""
    for store in stores:
        try:
            if store.read_fence() < epoch:
                store.write_fence(epoch)
        except CheckpointError as error:
            if settings.replication == "sync" and settings.on_replica_failure == "fail":
                raise
            journal.write("fence_failed", replica=store.url, error=str(error))
