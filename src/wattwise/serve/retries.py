"""Which failures of a model call another replica can fix, and how long to back off between tries.

Shared by the ingress's predict calls and its generation streams: both retry a call whose
replica died (or was unreachable or full) on another replica, within the request's deadline.
"""

from __future__ import annotations

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


def next_backoff_s(backoff_s: float) -> float:
    """The wait after `backoff_s`: doubled, capped at MAX_BACKOFF_S."""
    return min(backoff_s * 2, MAX_BACKOFF_S)
