"""A `cds-service serve` child process for tests that need the real server (gunicorn, workers, signals)."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes, float]:
    """GET on loopback: (status, body, seconds taken)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        connection.close()


def serve_env(data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The parent's environment without its CDS_* settings, plus auth off, the demo date, the data dir and
    the port; `settings` add or override CDS_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CDS_")}
    env.update(
        {
            "CDS_AUTH_MODE": "off",
            "CDS_DATA_DIR": str(data_dir),
            "CDS_AS_OF": "2025-06-01",
            "CDS_LOG_LEVEL": "WARNING",
            "CDS_PORT": str(port),
            **settings,
        }
    )
    return env


def start_serve(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`cds-service serve` under `env`, its output in `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "cds-service"), "serve"], env=env, stdout=log, stderr=log
        )


def wait_until_healthy(
    port: int, process: subprocess.Popen[bytes], log_path: Path, seconds: float = 60
) -> None:
    """Until /healthz answers 200; fails with the server's log if it exits or never answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        with contextlib.suppress(OSError):
            if get(port, "/healthz", 1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"no /healthz 200 within {seconds} s: {log_path.read_text()[-3000:]}")
