"""The whole suite runs under a loopback-only socket guard (pytest-socket, see pyproject addopts):
nothing a test does can reach another host, even if a service-side guard were broken."""

from __future__ import annotations

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


@pytest.mark.filterwarnings("ignore:A test tried to use socket")
@pytest.mark.parametrize("address", [("10.255.255.1", 80), ("169.254.169.254", 80), ("192.0.2.1", 443)])
def test_non_loopback_connections_are_blocked(address: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(SocketConnectBlockedError):
        sock.connect(address)


def test_loopback_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
