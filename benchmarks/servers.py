"""Start and stop the HTTP servers under test (loopback only), and talk to them.

Every process started here is stopped by its own pid (SIGTERM, then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PEERS_PYTHON = REPO_ROOT / "benchmarks" / ".venv-peers" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: Sequence[str]
    port: int
    env: Mapping[str, str]
    health_path: str = "/healthz"
    cwd: Path = REPO_ROOT
    process: subprocess.Popen[bytes] | None = None
    ready_s: float | None = None
    log_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def start(self, timeout_s: float = 60.0, log_dir: Path | None = None) -> float:
        """Start and wait for a 200 on the health path; returns seconds from spawn to ready."""
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{self.name}.log", "wb") if log_dir else subprocess.DEVNULL  # noqa: SIM115
        if log_dir:
            self.log_file = log_dir / f"{self.name}.log"
        started = time.monotonic()
        self.process = subprocess.Popen(
            list(self.argv), cwd=self.cwd, env={**os.environ, **self.env}, stdout=log, stderr=log
        )
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} (see {self.log_file})")
            try:
                status, _ = request("GET", self.port, self.health_path, timeout=1.0)
                if status == 200:
                    self.ready_s = time.monotonic() - started
                    return self.ready_s
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout_s} s (see {self.log_file})")

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(set(found))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def request(
    method: str,
    port: int,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    connection: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if connection is None:
            conn.close()


def cds_service_server(name: str, port: int, env: Mapping[str, str], workers: int) -> Server:
    return Server(
        name,
        [str(VENV_BIN / "cds-service"), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        port,
        env,
    )  # fmt: skip


def floor_server(port: int, env: Mapping[str, str]) -> Server:
    return Server(
        "floor-app",
        [sys.executable, "-m", "benchmarks.floor_app", "--port", str(port), "--workers", "2"],
        port,
        env,
    )


def stack_floor_server(
    port: int,
    env: Mapping[str, str],
    *,
    jwks_file: Path,
    issuer: str,
    audience: str,
    as_of: str,
    record_files: Sequence[Path],
    workers: int = 2,
) -> Server:
    """benchmarks.stack_floor_app: the floor app plus the stack's mandatory work (JWT, jti, validation)."""
    records = [arg for path in record_files for arg in ("--record", str(path))]
    return Server(
        "stack-floor",
        [sys.executable, "-m", "benchmarks.stack_floor_app", "--port", str(port), "--workers", str(workers),
         "--jwks", str(jwks_file), "--issuer", issuer, "--audience", audience, "--as-of", as_of, *records],
        port,
        env,
    )  # fmt: skip


def healthchain_server(port: int) -> Server:
    return Server(
        "healthchain",
        [str(PEERS_PYTHON), "-m", "uvicorn", "healthchain_app:app", "--app-dir", "benchmarks/peers",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        port,
        {},
        health_path="/cds/cds-discovery",
    )  # fmt: skip
