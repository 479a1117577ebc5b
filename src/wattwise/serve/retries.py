"""Which failures of a model call another replica can fix, and how long to back off between tries.

Shared by the ingress's predict calls and its generation streams: both retry a call whose
replica died (or was unreachable or full) on another replica, within the request's deadline.
"""

from __future__ import annotations

import asyncio
import time

from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    ReplicaUnavailableError,
)

# Failures that mean "this replica could not answer", never "this input is wrong".
REPLICA_FAILURES = (
    RayActorError,
    ReplicaUnavailableError,
    DeploymentUnavailableError,
    BackPressureError,
)
FIRST_BACKOFF_S = 0.02
MAX_BACKOFF_S = 0.5
# Full model queues (or KV caches) are overload, not failure: retry briefly, then answer 503 +
# Retry-After rather than hold the client until its deadline.
BACKPRESSURE_PATIENCE_S = 1.0


def is_replica_failure(error: BaseException) -> bool:
    """True when retrying elsewhere can help: the replica died or was unreachable or full.

    An exception raised by the model code itself (RayTaskError) would recur on any replica, so
    it is not retried, unless what it wraps is a replica failure. Other errors from Ray's own
    transport (not from user code) are treated as replica failures: inference is idempotent.
    """
    if isinstance(error, REPLICA_FAILURES):
        return True
    if isinstance(error, RayTaskError):
        return isinstance(getattr(error, "cause", None), REPLICA_FAILURES)
    return isinstance(error, RayError | RayServeException | ConnectionError)


def sheds_load(
    healthy: int, target: int, since_replica_failure_s: float | None, grace_s: float
) -> bool:
    """Whether full model queues mean overload (answer 503): every replica is counted healthy
    and none failed in the last `grace_s`. Serve's controller counts a SIGKILLed replica as
    RUNNING until its health check fails (period + timeout), so right after a death the count
    says "full capacity" while the survivors' queues hold the dead one's share: not overload.
    (Seen: one 503 of ~3,000 requests when a replica was SIGKILLed under 64 clients.)"""
    recent_failure = since_replica_failure_s is not None and since_replica_failure_s < grace_s
    return healthy >= target and not recent_failure


class RetrySchedule:
    """One request's tries: its deadline, the growing back-off, how long it has been overloaded.

    Example:
        schedule = RetrySchedule(timeout_s=30.0)
        while schedule.remaining_s() > 0:
            ...  # call a replica; on a replica failure:
            await schedule.back_off()
    """

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.backoff_s = FIRST_BACKOFF_S
        self.overloaded_since: float | None = None

    def remaining_s(self) -> float:
        """Seconds left before the deadline (≤ 0: give up)."""
        return self.deadline - time.monotonic()

    def overloaded_too_long(self) -> bool:
        """Record that every replica tried was full; True once that lasted past the patience."""
        self.overloaded_since = self.overloaded_since or time.monotonic()
        return time.monotonic() - self.overloaded_since > BACKPRESSURE_PATIENCE_S

    async def back_off(self) -> None:
        """Sleep the current back-off (never past the deadline), then double it (capped)."""
        await asyncio.sleep(min(self.backoff_s, max(0.0, self.remaining_s())))
        self.backoff_s = min(self.backoff_s * 2, MAX_BACKOFF_S)
