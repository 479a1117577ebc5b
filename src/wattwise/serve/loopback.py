"""Keep Ray Serve's per-replica gRPC listener on loopback when the node itself is loopback-only.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica bound to `[::]:0`
(all interfaces, hard-coded in `ray.serve._private.replica`, no setting), even when requests
use the actor transport. On a node whose Ray address is 127.0.0.1 no other node can use it,
so we rebind it to 127.0.0.1; on a real cluster node we leave it as Ray made it. Importing this
module (our deployments do) installs the rewrite in the replica process before Ray starts that
server; `test_every_server_socket_stays_on_loopback` checks the outcome.
"""

from __future__ import annotations

import ipaddress


def _node_is_loopback() -> bool:
    import ray

    if not ray.is_initialized():  # the address is only known inside a Ray process
        return False
    try:
        return ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback
    except (ValueError, RuntimeError):
        return False


def bind_replica_grpc_to_loopback() -> bool:
    """Install the rewrite; True when installed (a loopback node and a Ray that has the hook)."""
    from ray.serve._private import replica as ray_replica

    original = getattr(ray_replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "_wattwise_loopback", False):
        return original is not None
    if not _node_is_loopback():
        return False

    def add_port_on_loopback(server, address: str):
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port_on_loopback._wattwise_loopback = True
    ray_replica.add_port_to_grpc_server = add_port_on_loopback
    return True
