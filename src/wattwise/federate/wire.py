"""Bytes on the wire, counted at the socket: a loopback TCP relay in front of Flower's gRPC port.

Flower's legacy gRPC server owns its sockets and takes no interceptors, so the count is taken
where the bytes really pass: clients connect to the relay, the relay forwards every byte to the
gRPC server and counts both directions (HTTP/2 and gRPC framing included). `capture=True`
also keeps a copy of the upstream bytes, for the test that a client's data never leaves it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass

from wattwise.errors import OutputPathError

CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class WireCount:
    """Bytes seen by the relay so far: up = clients → server, down = server → clients."""

    up_bytes: int
    down_bytes: int
    connections: int


class ByteCountingRelay:
    """Listens on `listen_host:listen_port` (0: any free port), relays to `target_port` on loopback."""

    def __init__(
        self,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        capture: bool = False,
    ) -> None:
        self.target = ("127.0.0.1", target_port)  # the gRPC server itself listens on loopback only
        try:
            self._server = socket.create_server((listen_host, listen_port))
        except OSError as error:
            raise OutputPathError(
                f"cannot listen on {listen_host}:{listen_port} ({error.strerror}); "
                "choose a free port in --server-address"
            ) from error
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._up = self._down = self._connections = 0
        self._capture = bytearray() if capture else None
        self._sockets: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="wattwise-relay", daemon=True)
        self._thread.start()

    def count(self) -> WireCount:
        """The totals so far."""
        with self._lock:
            return WireCount(self._up, self._down, self._connections)

    def captured_upstream(self) -> bytes:
        """Every byte clients sent (only with capture=True)."""
        with self._lock:
            return bytes(self._capture or b"")

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += 1
                self._sockets += [client, upstream]
            for source, sink, upward in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, sink, upward), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(CHUNK_BYTES)
                if not data:
                    break
                with self._lock:
                    if upward:
                        self._up += len(data)
                        if self._capture is not None:
                            self._capture += data
                    else:
                        self._down += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._stopping.set()
        self._server.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
