"""Fault suite against the real `cds-service serve` (gevent workers, loopback): slow-loris clients, slow
bodies and idle keep-alive connections do not starve /healthz or the hook, and gunicorn's own errors
(400, 414, 431) are OperationOutcome JSON.

What must hold: with 8 hostile connections of each kind open, /healthz answers (median < 100 ms, each
< 1 s) and a hook call with prefetch gets 200; no 5xx anywhere."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.hostile_peers import hostile_peer
from tests.support.fixtures import hook_request
from tests.support.serve_process import free_port, get, serve_env

PATH = "/cds-services/osteoporosis-escalation"
HOSTILE_EACH = 8


MASTER_PIDS: dict[int, int] = {}


@pytest.fixture(name="server", scope="module")
def server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    data = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = serve_env(data, port, CDS_WORKERS="1")
    log = (data / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "cds-service"), "serve"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (data / "serve.log").read_text()
            with contextlib.suppress(OSError):
                if get(port, "/healthz", 1.0)[0] == 200:
                    break
            time.sleep(0.1)
        MASTER_PIDS[port] = process.pid
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


HOSTILE_ADDRESS = ("127.0.0.2", 0)  # another client than the test's own calls (per-client limits)


def open_hostile_connections(port: int) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    for index in range(HOSTILE_EACH):
        loris = socket.create_connection(("127.0.0.1", port), source_address=HOSTILE_ADDRESS)
        loris.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Slow-{index}: a".encode())  # never finished
        body = socket.create_connection(("127.0.0.1", port), source_address=HOSTILE_ADDRESS)
        body.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{".encode()
        )  # 1 byte of 100 000
        idle = socket.create_connection(("127.0.0.1", port), source_address=HOSTILE_ADDRESS)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        sockets += [loris, body, idle]
    return sockets


def test_slow_clients_do_not_starve_healthz_or_the_hook(server: int) -> None:
    sockets = open_hostile_connections(server)
    try:
        time.sleep(0.5)
        timings = []
        for _ in range(10):
            status, _, elapsed = get(server, "/healthz")
            assert status == 200
            timings.append(elapsed)
        assert max(timings) < 1.0, timings
        assert statistics.median(timings) < 0.1, timings
        body = json.dumps(hook_request("s01", with_prefetch=True)).encode()
        connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
        connection.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["cards"]
        connection.close()
    finally:
        for sock in sockets:
            sock.close()


def raw(port: int, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
    ],
)
def test_server_level_errors_are_operation_outcomes(server: int, payload: bytes, status: int) -> None:
    answered, headers, body = raw(server, payload)
    assert answered == status
    assert headers["Content-Type"] == "application/json"
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert b"aaaa" not in body and b"bbbb" not in body, "the request's text is never echoed"


def post_raw(port: int, body: bytes) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(server: int) -> None:
    request = json.dumps(hook_request("s01", with_prefetch=True)).encode()
    limit = 10_000_000  # CDS_MAX_BODY_BYTES default
    padded = request[:-1] + b',"extension":{"pad":"' + b"a" * (limit - len(request) - 23) + b'"}}'
    assert len(padded) == limit
    assert post_raw(server, padded) == 200
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, _, body = raw(server, (head + f"Content-Length: {limit + 1}\r\n\r\n").encode())
    assert status == 413 and json.loads(body)["resourceType"] == "OperationOutcome"


def worker_pids(master: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{master}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def test_sigkill_of_a_worker_mid_call_loses_only_that_call_and_the_service_comes_back(server: int) -> None:
    """Runs last in this module: the worker is killed and gunicorn starts a new one."""
    (worker,) = worker_pids(MASTER_PIDS[server])
    with hostile_peer("stall") as fhir:
        body = json.dumps(
            {
                "hook": "patient-view",
                "hookInstance": "d1f1f1f1-0000-4000-8000-000000000002",
                "fhirServer": fhir.base_url + "/fhir",
                "context": {"userId": "Practitioner/1", "patientId": "p1"},
            }
        ).encode()
        connection = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
        connection.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        time.sleep(0.3)  # the call now waits on the stalled FHIR server
        os.kill(worker, signal.SIGKILL)
        with pytest.raises((http.client.HTTPException, OSError)):
            connection.getresponse().read()  # that call has no answer (never a 5xx)
        connection.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if get(server, "/healthz", 1.0)[0] == 200 and worker_pids(MASTER_PIDS[server]) != [worker]:
                break
        time.sleep(0.1)
    assert post_raw(server, json.dumps(hook_request("s01", with_prefetch=True)).encode()) == 200
