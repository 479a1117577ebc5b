"""Start Ray on loopback only (or join a cluster), and stop everything we started.

Measured on these machines (../shared/FIELD-NOTES.md, ray 2.60): unless
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is set before Ray starts, raylet and GCS listen on all
interfaces and talk over the machine's network address even with `_node_ip_address=127.0.0.1`;
with usage stats on, Ray probes the cloud metadata address. Both variables must be in the
environment before `ray` is imported, because Ray reads some of them at import time.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from wattwise.errors import ConfigError
from wattwise.serve.grpc_ingress import HOST_ENV, SETUP_HOOK
from wattwise.serve.settings import ServeSettings, is_loopback


def keep_ray_local(joining_remote_cluster: bool = False) -> None:
    """Set the environment that keeps Ray on loopback and silent; call before importing ray."""
    # Usage stats phone home (and probed the cloud metadata address): always off.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not joining_remote_cluster:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Quiet Ray's own deprecation chatter; our logs say what matters.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray waits 30 s for its GCS to bind a port; on a busy 2-core machine starting it took
    # longer ("Timed out waiting for file .../gcs_server_port"). A bound on a hang, not a delay.
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")


def use_token_auth_if_available() -> None:
    """A driver joining a cluster sends Ray's auth token when this user has one.

    Ray 2.60 turns token auth on for the clusters it starts and saves the token in
    `~/.ray/auth_token`, but a driver that only connects sends it only with
    `RAY_AUTH_MODE=token`; without it, joining our own server's cluster is refused.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_MODE"] = "token"


def _joins_remote(address: str | None) -> bool:
    if address in (None, "auto"):
        return False
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return not is_loopback(host)


CLUSTER_CONNECT_TIMEOUT_S = 3.0


def check_cluster_answers(address: str) -> None:
    """ConfigError unless something accepts a TCP connection at a HOST:PORT cluster address.

    `ray.init` retries an address where nothing listens for minutes (seen: still retrying
    after 5 minutes with ray 2.60), so a wrong `--address` is caught here first. "auto" is
    resolved by Ray itself from this node's running cluster.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address {address!r}: use HOST:PORT of the Ray GCS, or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CLUSTER_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` or omit --address to start a local one"
        ) from error


def grpc_runtime_env(host: str) -> dict:
    """The job's runtime_env that puts Ray Serve's gRPC proxy on `host` (it binds `[::]`
    otherwise): a worker setup hook, `grpc_ingress.bind_grpc_proxy_to_host`."""
    return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": {HOST_ENV: host}}


@dataclass
class RayRuntime:
    """A connected Ray driver. `owns_cluster` is True when we started it (and must stop it)."""

    address: str
    owns_cluster: bool
    temp_dir: str | None

    def shutdown(self) -> None:
        """Disconnect; a cluster we started is stopped with every process it spawned."""
        import ray

        if ray.is_initialized():
            ray.shutdown()


def start_ray(settings: ServeSettings) -> RayRuntime:
    """Start a loopback-only Ray instance, or join `settings.address`.

    Dashboard off, object store bounded, logs kept in the session directory rather than
    streamed to this terminal.
    """
    keep_ray_local(_joins_remote(settings.address))
    if settings.address:
        check_cluster_answers(settings.address)
        use_token_auth_if_available()  # before importing ray: it reads the mode at import
    import ray

    if ray.is_initialized():
        context = ray.get_runtime_context()
        return RayRuntime(context.gcs_address, owns_cluster=False, temp_dir=None)
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    if settings.grpc_port is not None:
        common["runtime_env"] = grpc_runtime_env(settings.host)
    if settings.address:
        try:
            ray.init(address=settings.address, **common)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ConfigError(
                f"cannot join Ray cluster at {settings.address}: {str(error).splitlines()[0]}; "
                "check the address (HOST:PORT of the GCS) or omit --address to start one"
            ) from error
        return RayRuntime(ray.get_runtime_context().gcs_address, False, None)
    temp_dir = settings.ray_temp_dir or tempfile.mkdtemp(prefix="wwray-", dir="/tmp")
    ray.init(
        _node_ip_address="127.0.0.1",
        object_store_memory=settings.object_store_bytes,
        _temp_dir=temp_dir,
        num_cpus=os.cpu_count() or 1,
        **common,
    )
    return RayRuntime(ray.get_runtime_context().gcs_address, True, temp_dir)
