"""Run the in-memory Medplum FHIR server (tests/fhir_server/server.mjs) as a child process.

Install once with ``npm ci --prefix tests/fhir_server`` (it brings its own Node 22 binary; the machine's
node is not used). Then::

    with running_fhir_server() as server:
        server.load(bundle)                      # POST a transaction Bundle
        requests.get(f"{server.base_url}/Observation", params={"patient": "s01"})
        server.requests()                        # what was asked, without Authorization values

or use the session-scoped pytest fixture ``fhir_server`` (import ``fhir_server`` or ``fhir_server_fixture``
into a conftest or test module).
Without node_modules the fixture skips with the install hint, or fails when ``CI=true``.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import leak_guard

SERVER_DIR = Path(__file__).resolve().parents[1] / "fhir_server"
NODE_MAJOR = 22
INSTALL_HINT = (
    "run `npm ci --prefix tests/fhir_server` (installs Medplum and a Node 22 binary into node_modules)"
)
FHIR_JSON = "application/fhir+json"


class FhirServerUnavailableError(RuntimeError):
    """node_modules (or its Node 22 binary) is missing, or the server did not start."""


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str  # path with query string, as sent
    has_authorization: bool


def _node_version(binary: Path) -> str | None:
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=15, check=False
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_node_binary(server_dir: Path = SERVER_DIR) -> Path:
    """The Node 22 binary installed by the npm package ``node`` inside ``server_dir/node_modules``."""
    modules = server_dir / "node_modules"
    if not (modules / "@medplum" / "fhir-router").is_dir():
        raise FhirServerUnavailableError(f"{modules} has no @medplum/fhir-router: {INSTALL_HINT}")
    candidates = [
        modules / "node" / "bin" / "node",
        modules / ".bin" / "node",
        *sorted((modules / "node" / "node_modules").glob("node-*/bin/node")),
        *sorted(modules.glob("node-*/bin/node")),
    ]
    seen: list[str] = []
    for candidate in candidates:
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            continue
        version = _node_version(candidate)
        seen.append(f"{candidate}: {version}")
        if version and version.lstrip("v").split(".")[0] == str(NODE_MAJOR):
            return candidate
    detail = "; ".join(seen) or "no node binary found"
    raise FhirServerUnavailableError(f"no Node {NODE_MAJOR} binary in {modules} ({detail}): {INSTALL_HINT}")


class FhirServerProcess:
    """A running server.mjs; ``base_url`` is ``http://127.0.0.1:<port>`` (no trailing slash)."""

    def __init__(self, process: subprocess.Popen[str], port: int, stderr_tail: deque[str]) -> None:
        self.process = process
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._stderr_tail = stderr_tail
        self._session = requests.Session()

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle; returns the response Bundle, raises if any entry failed."""
        response = self._session.post(
            self.base_url + "/",
            data=json.dumps(bundle),
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
            timeout=60,
        )
        if response.status_code != 200:
            raise RuntimeError(f"loading bundle failed: HTTP {response.status_code}: {response.text[:500]}")
        result: dict[str, Any] = response.json()
        failed = [
            e.get("response", {})
            for e in result.get("entry", [])
            if not str(e.get("response", {}).get("status", "")).startswith("2")
        ]
        if result.get("resourceType") != "Bundle" or failed:
            raise RuntimeError(f"loading bundle failed: {failed[:3] or result}")
        return result

    def get(
        self, path: str, params: dict[str, str] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """GET ``path`` (relative to the base, e.g. ``Observation?patient=s01``); the JSON body of a 200."""
        headers = {"Accept": FHIR_JSON}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = self._session.get(
            f"{self.base_url}/{path.lstrip('/')}", params=params, headers=headers, timeout=30
        )
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} failed: HTTP {response.status_code}: {response.text[:500]}")
        body: dict[str, Any] = response.json()
        return body

    def requests(self) -> list[SeenRequest]:
        """The FHIR requests seen (oldest first), each with whether an Authorization header was sent."""
        response = self._session.get(f"{self.base_url}/__requests", timeout=10)
        response.raise_for_status()
        return [SeenRequest(r["method"], r["path"], bool(r["hasAuthorization"])) for r in response.json()]

    def clear_requests(self) -> None:
        self._session.delete(f"{self.base_url}/__requests", timeout=10).raise_for_status()

    def stderr_tail(self) -> str:
        return "".join(self._stderr_tail)

    def stop(self, timeout: float = 10.0) -> None:
        self._session.close()
        leak_guard.scan("FHIR server process output", self.stderr_tail())
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def _pump(stream: Any, sink: queue.Queue[str] | deque[str]) -> None:
    for line in iter(stream.readline, ""):
        if isinstance(sink, deque):
            sink.append(line)
        else:
            sink.put(line)
    stream.close()


@contextmanager
def running_fhir_server(
    *, startup_timeout: float = 60.0, server_dir: Path = SERVER_DIR, profile: str = "plain"
) -> Iterator[FhirServerProcess]:
    """Start server.mjs on an ephemeral loopback port; stop it on exit (kill after a timeout).

    `profile` (FHIR_PROFILE): `plain`, or `oracle` / `epic` to imitate that vendor's server (server.mjs)."""
    node = find_node_binary(server_dir)
    process = subprocess.Popen(
        [str(node), "server.mjs", "0"],
        cwd=server_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_ENV": "test", "FHIR_PROFILE": profile},
    )
    stdout_lines: queue.Queue[str] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=50)
    threading.Thread(target=_pump, args=(process.stdout, stdout_lines), daemon=True).start()
    threading.Thread(target=_pump, args=(process.stderr, stderr_tail), daemon=True).start()

    port: int | None = None
    deadline = time.monotonic() + startup_timeout
    try:
        while port is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerUnavailableError(
                    f"FHIR server did not report its port within {startup_timeout:.0f} s; "
                    f"stderr: {''.join(stderr_tail)[-2000:]}"
                )
            try:
                line = stdout_lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if process.poll() is not None:
                    time.sleep(0.2)  # let the stderr pump catch up
                    raise FhirServerUnavailableError(
                        f"FHIR server exited with code {process.returncode}; "
                        f"stderr: {''.join(stderr_tail)[-2000:]}"
                    ) from None
                continue
            try:
                port = int(json.loads(line)["port"])
            except (ValueError, KeyError, TypeError):
                continue  # not the port line
    except BaseException:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        raise

    server = FhirServerProcess(process, port, stderr_tail)
    try:
        yield server
    finally:
        server.stop()


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session", name="fhir_server")
def fhir_server_fixture() -> Iterator[FhirServerProcess]:
    """A running test FHIR server for the whole session (skip without node_modules; fail when CI=true)."""
    try:
        find_node_binary()
    except FhirServerUnavailableError as exc:
        if _ci():
            pytest.fail(f"FHIR test server unavailable in CI: {exc}")
        pytest.skip(f"FHIR test server unavailable: {exc}")
    with running_fhir_server() as server:
        yield server


@contextmanager
def fhir_server_or_skip(profile: str) -> Iterator[FhirServerProcess]:
    """`running_fhir_server(profile=...)` with the fixture's skip/fail rule when Node is not installed."""
    try:
        find_node_binary()
    except FhirServerUnavailableError as exc:
        if _ci():
            pytest.fail(f"FHIR test server unavailable in CI: {exc}")
        pytest.skip(f"FHIR test server unavailable: {exc}")
    with running_fhir_server(profile=profile) as server:
        yield server


# The fixture is registered as ``fhir_server`` under either name; a conftest can do
# ``from tests.support.fhir_server import fhir_server``.
fhir_server = fhir_server_fixture
