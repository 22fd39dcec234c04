"""A pooled keep-alive connection that the FHIR server closes as the next request goes out is retried once
on a new connection (it made a healthy call a 412); nothing else is ever retried."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from urllib3.exceptions import MaxRetryError, ProtocolError

from cds_service.core.net_deadline import Deadline, enforce
from cds_service.gather.fhir_server_guard import ConnectPolicy, PinnedAdapter
from cds_service.gather.shared_http import _new_session
from cds_service.gather.stale_retry import StaleConnectionRetry, stale_connection_retry

BODY = b'{"resourceType":"Bundle","type":"searchset","entry":[]}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nConnection: keep-alive\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


@dataclass
class LoopbackServer:
    """Answers the first request of each connection; `drop_second` closes a connection instead of answering
    its second request (an idle close crossing the request); `silent` never answers at all."""

    drop_second: bool = True
    silent: bool = False
    connections: int = 0
    requests: int = 0
    sock: socket.socket = field(default_factory=lambda: socket.create_server(("127.0.0.1", 0)))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/fhir/Observation"

    def serve(self) -> None:
        self.sock.settimeout(5)
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            served = 0
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.requests += 1
                if self.silent:
                    time.sleep(2)
                    return
                if served == 1 and self.drop_second:
                    return  # closed without an answer
                conn.sendall(ANSWER)
                served += 1


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    thread = threading.Thread(target=srv.serve, daemon=True)
    thread.start()
    yield srv
    srv.sock.close()


def test_an_aborted_reuse_is_retried_once_on_a_new_connection(server: LoopbackServer) -> None:
    session = _new_session()
    assert session.get(server.url, timeout=(1, 1)).json()["type"] == "searchset"
    second = session.get(server.url, timeout=(1, 1))  # reuses the connection the server now drops
    assert second.status_code == 200
    assert (server.connections, server.requests) == (2, 3)


def test_a_read_timeout_is_never_retried(server: LoopbackServer) -> None:
    server.silent = True
    session = _new_session()
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(server.url, timeout=(1, 0.3))
    assert time.monotonic() - started < 0.9
    assert server.requests == 1


def test_every_fhir_adapter_uses_the_policy() -> None:
    plain = _new_session().get_adapter("https://fhir.example.org/")
    assert isinstance(plain.max_retries, StaleConnectionRetry)
    pinned = PinnedAdapter(
        ConnectPolicy(origin=("https", "fhir.example.org", 443), allow_loopback=False, allow_private=False)
    )
    assert isinstance(pinned.max_retries, StaleConnectionRetry)
    assert pinned.max_retries.allowed_methods == frozenset({"GET"})


def test_a_connection_the_deadline_shut_is_not_retried() -> None:
    aborted = ProtocolError("Connection aborted.", ConnectionResetError())
    assert stale_connection_retry().increment("GET", "/fhir/Observation", error=aborted).total == 0
    with enforce(Deadline.after(0)), pytest.raises((ProtocolError, MaxRetryError)):
        stale_connection_retry().increment("GET", "/fhir/Observation", error=aborted)
    with pytest.raises((ProtocolError, MaxRetryError)):  # never for a non-idempotent method either
        stale_connection_retry().increment("POST", "/fhir/Observation", error=aborted)
