"""Shared set-up for training tests: free loopback ports and a private etcd."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def etcd_endpoint(tmp_path):
    """A private etcd on loopback (Debian's etcd-server); skips when the binary is absent."""
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd not installed: `make etcd` (apt-get install etcd-server) to run this")
    client, peer = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{client}"
    process = subprocess.Popen(
        [
            binary,
            "--name",
            "wattwise-test",
            "--data-dir",
            str(tmp_path / "etcd-data"),
            "--listen-client-urls",
            endpoint,
            "--advertise-client-urls",
            endpoint,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"wattwise-test=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{endpoint}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("etcd did not become healthy within 15 s")
            time.sleep(0.1)
        yield endpoint
    finally:
        process.kill()
        process.wait()
