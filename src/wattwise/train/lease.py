"""Who is the primary: a lease with a TTL, renewals, and a fencing epoch.

The primary acquires the lease and renews it every TTL/3; a standby polls and takes the lease
once it has expired. Every acquisition gets a larger epoch; writers record it on each replica
(the FENCE file) and check it before every commit, so a primary that was paused or cut off and
comes back with an older epoch stops before it writes (Kleppmann's fencing tokens, "How to do
distributed locking", 2016).

Backends:
- `FileLease` (default, one machine): `lease.lock` is flock'ed around every read-modify-write of
  `lease.json` (holder, epoch, expiry) and `epoch` (a monotonic counter).
- `EtcdLease` (several machines): etcd v3's JSON gateway over plain HTTP. A lease with the TTL is
  granted, and the key is created only if absent (`create_revision == 0`) bound to that lease; the
  key's create revision is the epoch. When the holder stops renewing, etcd deletes the key.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import socket
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol

from wattwise.errors import WattwiseError
from wattwise.paths import atomic_write_text
from wattwise.train.config import TrainSettings
from wattwise.train.journal import Journal


class FencedError(WattwiseError):
    """This process's lease epoch is no longer current: another primary took over."""

    exit_code = 4


class LeaseUnavailableError(WattwiseError):
    """The lease backend cannot be reached or the lease is held by another primary."""


def default_holder() -> str:
    """host:pid, to say in messages who holds the lease."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease(Protocol):
    """A TTL lease with a fencing epoch."""

    ttl_s: float
    holder: str

    def try_acquire(self) -> int | None:
        """Take the lease if free or expired; returns the new epoch, or None if held."""

    def renew(self, epoch: int) -> bool:
        """Extend the lease; False if `epoch` is no longer the current holder's."""

    def current_epoch(self) -> int:
        """The newest epoch granted so far (0 before any)."""

    def release(self, epoch: int) -> None:
        """Give the lease up now (a clean exit lets a standby promote at once)."""

    def describe(self) -> str:
        """Who holds it, for messages."""


class FileLease:
    """A lease in a directory on one machine: flock for mutual exclusion, files for state."""

    def __init__(self, directory: str | Path, ttl_s: float = 2.0, holder: str | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.holder = holder or default_holder()

    @contextmanager
    def _locked(self):
        with open(self.directory / "lease.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _record(self) -> dict:
        try:
            return json.loads((self.directory / "lease.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _epoch(self) -> int:
        try:
            return int((self.directory / "epoch").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write(self, epoch: int, expires_unix: float) -> None:
        record = {"holder": self.holder, "epoch": epoch, "expires_unix": expires_unix}
        atomic_write_text(self.directory / "lease.json", json.dumps(record))

    def try_acquire(self) -> int | None:
        with self._locked():
            record = self._record()
            if record and record.get("expires_unix", 0) > time.time():
                return None
            epoch = self._epoch() + 1
            atomic_write_text(self.directory / "epoch", str(epoch))  # durable before use
            self._write(epoch, time.time() + self.ttl_s)
            return epoch

    def renew(self, epoch: int) -> bool:
        with self._locked():
            record = self._record()
            # Still ours only if nobody acquired since: any acquisition bumps the epoch.
            if record.get("epoch") != epoch or record.get("holder") != self.holder:
                return False
            self._write(epoch, time.time() + self.ttl_s)
            return True

    def current_epoch(self) -> int:
        with self._locked():
            return self._epoch()

    def release(self, epoch: int) -> None:
        with self._locked():
            record = self._record()
            if record.get("epoch") == epoch and record.get("holder") == self.holder:
                self._write(epoch, 0.0)

    def describe(self) -> str:
        record = self._record()
        if not record:
            return "nobody"
        left = record.get("expires_unix", 0) - time.time()
        return f"{record.get('holder', '?')} (epoch {record.get('epoch', 0)}, {left:.1f} s left)"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdLease:
    """A lease on an etcd v3 cluster through its JSON gateway (`/v3/...`)."""

    def __init__(
        self,
        endpoints: list[str],
        key: str = "/wattwise/train/primary",
        ttl_s: float = 2.0,
        holder: str | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        import httpx

        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key = key
        self.ttl_s = ttl_s
        self.holder = holder or default_holder()
        self._client = httpx.Client(timeout=timeout_s)
        self._lease_id: str | None = None
        self._epoch_seen = 0

    def _post(self, path: str, body: dict) -> dict:
        errors = []
        for endpoint in self.endpoints:
            try:
                response = self._client.post(f"{endpoint}{path}", json=body)
                response.raise_for_status()
                return response.json()
            except Exception as error:  # noqa: BLE001 - any failure: try the next endpoint
                errors.append(f"{endpoint}: {error}")
        raise LeaseUnavailableError(
            f"etcd unreachable ({'; '.join(errors)}); start etcd or fix lease.endpoints"
        )

    def try_acquire(self) -> int | None:
        ttl = max(1, round(self.ttl_s))  # etcd leases have whole-second TTLs
        lease_id = self._post("/v3/lease/grant", {"TTL": ttl})["ID"]
        key = _b64(self.key)
        reply = self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": key, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
                ],
                "success": [
                    {"request_put": {"key": key, "value": _b64(self.holder), "lease": lease_id}}
                ],
            },
        )
        if not reply.get("succeeded"):
            self._post("/v3/lease/revoke", {"ID": lease_id})
            return None
        self._lease_id = lease_id
        epoch = int(reply["header"]["revision"])  # the put's revision = the key's create_revision
        self._epoch_seen = max(self._epoch_seen, epoch)
        return epoch

    def _key_record(self) -> dict | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(self.key)}).get("kvs") or []
        return kvs[0] if kvs else None

    def renew(self, epoch: int) -> bool:
        if self._lease_id is None:
            return False
        result = self._post("/v3/lease/keepalive", {"ID": self._lease_id}).get("result", {})
        if int(result.get("TTL", 0)) <= 0:
            return False
        record = self._key_record()
        return record is not None and int(record.get("create_revision", 0)) == epoch

    def current_epoch(self) -> int:
        record = self._key_record()
        if record is not None:
            self._epoch_seen = max(self._epoch_seen, int(record.get("create_revision", 0)))
        return self._epoch_seen

    def release(self, epoch: int) -> None:
        if self._lease_id is not None:
            try:
                self._post("/v3/lease/revoke", {"ID": self._lease_id})
            finally:
                self._lease_id = None

    def describe(self) -> str:
        record = self._key_record()
        if record is None:
            return "nobody"
        holder = base64.b64decode(record.get("value", "")).decode(errors="replace")
        return f"{holder} (epoch {record.get('create_revision')})"


class LeaseKeeper:
    """Renews a held lease every TTL/3 in a thread; `check()` raises once it is lost.

    The lease counts as lost when a renewal says another epoch holds it, or when no renewal has
    succeeded for a whole TTL (the standby may already have taken over by then).
    """

    def __init__(self, lease: Lease, epoch: int) -> None:
        self.lease = lease
        self.epoch = epoch
        self.lost: str | None = None
        self._last_renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wattwise-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = self.lease.ttl_s / 3
        while not self._stop.wait(interval):
            try:
                if self.lease.renew(self.epoch):
                    self._last_renewed = time.monotonic()
                else:
                    self.lost = f"the lease now belongs to {self.lease.describe()}"
                    return
            except WattwiseError:
                continue  # a transient failure; check() notices when a whole TTL passes

    def check(self) -> None:
        """Raise FencedError unless this process still holds the lease with its epoch."""
        if self.lost is None and time.monotonic() - self._last_renewed > self.lease.ttl_s:
            self.lost = f"no renewal succeeded for {self.lease.ttl_s:.1f} s (TTL)"
        if self.lost is not None:
            raise FencedError(
                f"lease epoch {self.epoch} lost: {self.lost}; this primary stops before writing"
            )

    def stop(self, release: bool = True) -> None:
        """Stop renewing; release the lease so a standby can promote at once."""
        self._stop.set()
        self._thread.join(timeout=self.lease.ttl_s)
        if release and self.lost is None:
            with suppress(WattwiseError):  # unreleased, it simply expires after the TTL
                self.lease.release(self.epoch)


def make_lease(settings: TrainSettings) -> Lease:
    """The configured lease backend."""
    if settings.lease.backend == "etcd":
        return EtcdLease(settings.lease.endpoints, settings.lease.key, settings.lease.ttl_s)
    return FileLease(settings.lease_dir(), settings.lease.ttl_s)


def wait_for_lease(lease: Lease, poll_s: float, journal: Journal) -> int:
    """Standby: poll until the primary's lease is free or expired, then take it."""
    journal.write("standby_waiting", holder=describe_holder(lease))
    while True:
        try:
            epoch = lease.try_acquire()
        except LeaseUnavailableError as error:
            journal.write("lease_backend_unreachable", error=str(error))
            epoch = None
        if epoch is not None:
            return epoch
        time.sleep(poll_s)


def describe_holder(lease: Lease) -> str:
    """Who holds the lease, or why that is unknown (never raises)."""
    try:
        return lease.describe()
    except LeaseUnavailableError as error:
        return f"unknown ({error})"
