"""Hostile HTTP peers on 127.0.0.1 for the fault suite: each accepted connection gets one behaviour.

- `drip`: a 200 with a Content-Length, then the body one byte every `interval_s` (never finishes in time);
- `drip_headers`: the status line and headers one byte every `interval_s`;
- `stall`: accepts, reads the request, never answers;
- `ok`: answers `body` at once (a healthy peer on the same machinery).

Every connection thread stops by itself after `max_s`, and `close()` stops the server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

Behaviour = Literal["drip", "drip_headers", "stall", "ok"]


class HostilePeer:
    def __init__(
        self,
        behaviour: Behaviour,
        *,
        body: bytes = b'{"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}',
        interval_s: float = 0.2,
        max_s: float = 20.0,
        content_type: str = "application/fhir+json",
    ) -> None:
        self.behaviour = behaviour
        self.body = body
        self.interval_s = interval_s
        self.max_s = max_s
        self.content_type = content_type
        self.connections = 0
        self._closed = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        started = time.monotonic()
        with contextlib.closing(connection):
            connection.settimeout(1.0)
            with contextlib.suppress(OSError):
                self._read_request(connection)
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\n"
                    f"Content-Length: {len(self.body)}\r\n\r\n"
                ).encode()
                if self.behaviour == "ok":
                    connection.sendall(head + self.body)
                    return
                if self.behaviour == "stall":
                    while not self._closed.is_set() and time.monotonic() - started < self.max_s:
                        time.sleep(0.05)
                    return
                if self.behaviour == "drip":
                    connection.sendall(head)
                    payload = self.body
                else:
                    payload = head + self.body
                for byte in _bytes(payload):
                    if self._closed.is_set() or time.monotonic() - started > self.max_s:
                        return
                    connection.sendall(byte)
                    time.sleep(self.interval_s)

    @staticmethod
    def _read_request(connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                return
            data += chunk


def _bytes(payload: bytes) -> Iterator[bytes]:
    for index in range(len(payload)):
        yield payload[index : index + 1]


@contextlib.contextmanager
def hostile_peer(behaviour: Behaviour, **options: object) -> Iterator[HostilePeer]:
    peer = HostilePeer(behaviour, **options)  # type: ignore[arg-type]
    try:
        yield peer
    finally:
        peer.close()
