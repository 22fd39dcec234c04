"""Availability under hostile peers (loopback only): a healthy tenant's latency and /healthz while
8 hostile peers of each kind run against `cds-service serve`.

Hostile kinds: slow-loris clients (headers 1 byte/s), slow-body clients (Content-Length 100 kB, body
1 byte/s), idle keep-alive connections, hook calls whose fhirServer drip-feeds its answers (1 byte
every 0.2 s) or stalls, and a flood client (8 connections posting full hook calls with prefetch as fast
as they are answered, ignoring 429 and Retry-After). Each kind connects from its own loopback address
(127.0.0.2-7), so each is one client for the per-client limits; the healthy tenant (127.0.0.1) sends its
record in prefetch, two loops in parallel, each pausing `--healthy-pause` s between calls (a tenant
within its quota). Every loop is bounded in count and time; every process started is stopped by pid.

    .venv/bin/python -m benchmarks.hostile --worker-class gevent --seconds 15
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from benchmarks.records import request_bytes
from benchmarks.servers import cds_service_server, free_port, request

AS_OF = date(2026, 11, 30)
PATH = "/cds-services/osteoporosis-escalation"
HOSTILE_EACH = 8
ADDRESSES = {
    "healthy": "127.0.0.1",
    "slow_loris": "127.0.0.2",
    "slow_body": "127.0.0.3",
    "idle_keepalive": "127.0.0.4",
    "drip_tenant": "127.0.0.5",
    "stall_tenant": "127.0.0.6",
    "flood": "127.0.0.7",
}
LOG_DIR = Path(tempfile.gettempdir()) / "cds-hostile-logs"


class Stop:
    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def post_from(kind: str, port: int, body: bytes, timeout: float) -> int:
    """POST a hook call from the kind's own loopback address; 0 when the connection failed."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(ADDRESSES[kind], 0)
    )
    try:
        connection.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def healthy_loop(
    port: int, body: bytes, until: float, latencies: list[float], errors: list[int], *, pause_s: float
) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        status = post_from("healthy", port, body, timeout=10)
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            errors.append(status)
        time.sleep(pause_s)


def health_loop(port: int, until: float, latencies: list[float], errors: list[int]) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            status, _ = request("GET", port, "/healthz", timeout=5)
        except OSError:
            status = 0
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200:
            errors.append(status)
        time.sleep(0.1)


def measure(port: int, body: bytes, seconds: float, pause_s: float) -> dict[str, Any]:
    until = time.monotonic() + seconds
    calls: list[float] = []
    health: list[float] = []
    call_errors: list[int] = []
    health_errors: list[int] = []
    threads = [
        threading.Thread(
            target=healthy_loop, args=(port, body, until, calls, call_errors), kwargs={"pause_s": pause_s}
        )
        for _ in range(2)
    ]
    threads.append(threading.Thread(target=health_loop, args=(port, until, health, health_errors)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "calls": len(calls),
        "p50_ms": round(statistics.median(calls), 1) if calls else None,
        "p99_ms": round(percentile(calls, 0.99), 1) if calls else None,
        "errors": sorted(set(call_errors)),
        "error_count": len(call_errors),
        "healthz_max_ms": round(max(health), 1) if health else None,
        "healthz_p99_ms": round(percentile(health, 0.99), 1) if health else None,
        "healthz_errors": len(health_errors),
    }


# -- hostile peers -----------------------------------------------------------------------------------------


def connect(kind: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(ADDRESSES[kind], 0))


def slow_loris(port: int, stop: Stop) -> None:
    """Send a request's headers one byte per second, forever (reconnect when cut)."""
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: {'a' * 5000}"
    while not stop.event.is_set():
        with contextlib.suppress(OSError), connect("slow_loris", port) as sock:
            for char in head:
                sock.sendall(char.encode())
                if stop.wait(1.0):
                    return


def slow_body(port: int, stop: Stop) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    while not stop.event.is_set():
        with contextlib.suppress(OSError), connect("slow_body", port) as sock:
            sock.sendall(head.encode())
            for _ in range(100000):
                sock.sendall(b" ")
                if stop.wait(1.0):
                    return


def idle_keepalive(port: int, stop: Stop) -> None:
    while not stop.event.is_set():
        with contextlib.suppress(OSError), connect("idle_keepalive", port) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            sock.settimeout(2)
            with contextlib.suppress(OSError):
                sock.recv(65536)
            while not stop.wait(1.0):  # then stay connected and silent
                pass
            return


class DripFhir:
    """A FHIR server on loopback answering every request with a body drip-fed 1 byte / 0.2 s (or stalling)."""

    def __init__(self, stall: bool, stop: Stop) -> None:
        self.stall = stall
        self.stop = stop
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.listener.settimeout(0.5)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.event.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        self.listener.close()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(5)
            conn.recv(65536)
            if self.stall:
                self.stop.wait(30)
                return
            body = b'{"resourceType": "Bundle", "type": "searchset", "entry": []}' * 10
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: %d\r\n\r\n"
                % len(body)
            )
            for index in range(len(body)):
                conn.sendall(body[index : index + 1])
                if self.stop.wait(0.2):
                    return


def hostile_tenant(port: int, fhir: DripFhir, stop: Stop, statuses: list[int], pause_s: float) -> None:
    body = json.dumps(
        {
            "hook": "patient-view",
            "hookInstance": "d1f1f1f1-0000-4000-8000-000000000001",
            "fhirServer": f"http://127.0.0.1:{fhir.port}/fhir",
            "context": {"userId": "Practitioner/1", "patientId": "p1"},
        }
    ).encode()
    kind = "stall_tenant" if fhir.stall else "drip_tenant"
    while not stop.event.is_set():
        statuses.append(post_from(kind, port, body, timeout=15))
        if pause_s and stop.wait(pause_s):
            return


def flood(port: int, stop: Stop, statuses: list[int]) -> None:
    """One client's connection posting full hook calls back to back, ignoring 429 and Retry-After."""
    body = request_bytes("small", AS_OF)
    while not stop.event.is_set():
        statuses.append(post_from("flood", port, body, timeout=15))


def hostile_main(
    port: int, stop_flag: Any, statuses: Any, kinds: frozenset[str], pause_s: float, *, niceness: int = 0
) -> None:
    """In its own process (so the measuring client does not share a GIL with 100 hostile threads)."""
    if niceness:
        os.nice(niceness)  # the peers' own CPU is not the service's: see --attacker-nice
    stop = Stop()
    tenant_statuses: list[int] = []
    flood_statuses: list[int] = []
    threads = []
    for kind in (slow_loris, slow_body, idle_keepalive) if "slow" in kinds else ():
        threads += [
            threading.Thread(target=kind, args=(port, stop), daemon=True) for _ in range(HOSTILE_EACH)
        ]
    for stall in (False, True) if "tenants" in kinds else ():
        for _ in range(HOSTILE_EACH):
            fhir = DripFhir(stall, stop)
            threads.append(
                threading.Thread(
                    target=hostile_tenant, args=(port, fhir, stop, tenant_statuses, pause_s), daemon=True
                )
            )
    if "flood" in kinds:
        threads += [
            threading.Thread(target=flood, args=(port, stop, flood_statuses), daemon=True)
            for _ in range(HOSTILE_EACH)
        ]
    for thread in threads:
        thread.start()
    stop_flag.wait(600)
    stop.event.set()
    for thread in threads:
        thread.join(timeout=5)
    statuses.append(("tenants", tenant_statuses))
    statuses.append(("flood", flood_statuses))


@contextlib.contextmanager
def hostile_load(
    port: int, kinds: frozenset[str], pause_s: float = 0.0, niceness: int = 0
) -> Iterator[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    stop_flag = manager.Event()
    statuses = manager.list()
    process = context.Process(
        target=hostile_main,
        args=(port, stop_flag, statuses, kinds, pause_s),
        kwargs={"niceness": niceness},
        daemon=True,
    )
    process.start()
    time.sleep(3)  # let every hostile peer get hold of what it can
    collected: dict[str, Any] = {}
    try:
        yield collected
    finally:
        stop_flag.set()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
        for name, codes in list(statuses):
            if codes:
                collected[name] = {str(code): codes.count(code) for code in sorted(set(codes))}
        manager.shutdown()


PHASES = {
    "slow_clients_only": frozenset({"slow"}),
    "hostile": frozenset({"slow", "tenants"}),
    "flood_only": frozenset({"flood"}),
    "all": frozenset({"slow", "tenants", "flood"}),
}


def run(
    worker_class: str,
    seconds: float,
    workers: int,
    *,
    database_url: str | None = None,
    pause_s: float = 0.0,
    healthy_pause_s: float = 0.2,
    client_limits: bool = True,
    fair_queue: bool = True,
    phases: tuple[str, ...] = tuple(PHASES),
    attacker_nice: int = 0,
) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cds-hostile-", dir=os.environ.get("BENCH_DATA_PARENT")) as data:
        env = {
            "CDS_AUTH_MODE": "off",
            "CDS_DATA_DIR": data,
            "CDS_AS_OF": AS_OF.isoformat(),
            "CDS_LOG_LEVEL": "WARNING",
            "CDS_WORKER_CLASS": worker_class,
        }
        if database_url:
            env["CDS_DATABASE_URL"] = database_url
        if not client_limits:
            env.update({"CDS_CLIENT_RATE_LIMIT": "", "CDS_CLIENT_MAX_IN_FLIGHT": "0"})
        if not fair_queue:
            env["CDS_FAIR_QUEUE_MAX"] = "0"
        for key in [key for key in os.environ if key.startswith("CDS_")]:
            os.environ.pop(key)
        server = cds_service_server(f"cds-{worker_class}", port, env, workers)
        server.start(log_dir=LOG_DIR)
        result: dict[str, Any] = {}
        try:
            body = request_bytes("small", AS_OF)
            measure(port, body, 2, healthy_pause_s)  # warm-up
            result["unloaded"] = measure(port, body, seconds, healthy_pause_s)
            for phase in phases:
                with hostile_load(port, PHASES[phase], pause_s, attacker_nice) as statuses:
                    result[phase] = measure(port, body, seconds, healthy_pause_s)
                result[phase]["hostile_statuses"] = statuses
        finally:
            server.stop()
    settings = {"tenant_pause_s": pause_s, "healthy_pause_s": healthy_pause_s, "client_limits": client_limits,
                "fair_queue": fair_queue, "attacker_nice": attacker_nice}  # fmt: skip
    database = "postgresql" if database_url else "sqlite"
    return {"worker_class": worker_class, "workers": workers, "database": database, "settings": settings,
            **result}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker-class", action="append", choices=("gthread", "gevent"))
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--tenant-pause",
        type=float,
        default=0.0,
        help="seconds each hostile tenant waits between calls (0: flood)",
    )
    parser.add_argument("--healthy-pause", type=float, default=0.2, help="seconds between healthy calls")
    parser.add_argument("--no-client-limits", action="store_true", help="turn the per-client limits off")
    parser.add_argument("--no-fair-queue", action="store_true", help="CDS_FAIR_QUEUE_MAX=0")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma list of {', '.join(PHASES)}")
    parser.add_argument(
        "--attacker-nice",
        type=int,
        default=0,
        help="niceness of the hostile peers' process (on other hosts in reality; here they share the cores)",
    )
    parser.add_argument("--database-url", help="e.g. a PostgreSQL URL (default: SQLite in a temp dir)")
    args = parser.parse_args()
    kinds = args.worker_class or ["gthread", "gevent"]
    results = [
        run(kind, args.seconds, args.workers, database_url=args.database_url, pause_s=args.tenant_pause,
            healthy_pause_s=args.healthy_pause, client_limits=not args.no_client_limits,
            fair_queue=not args.no_fair_queue, phases=tuple(args.phases.split(",")),
            attacker_nice=args.attacker_nice)
        for kind in kinds
    ]  # fmt: skip
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
