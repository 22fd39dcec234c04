"""The SMART authorization server (tests/smart_auth/server.mjs, oidc-provider) and the service on a real
loopback port, for the SMART app's browser tests.

``npm ci --prefix tests/smart_auth`` installs oidc-provider and axe-core; the server runs on the Node 22
binary that tests/fhir_server installs.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.support.fhir_server import find_node_binary

AUTH_DIR = Path(__file__).resolve().parents[1] / "smart_auth"
AXE_SCRIPT = AUTH_DIR / "node_modules" / "axe-core" / "axe.min.js"
INSTALL_HINT = "run `npm ci --prefix tests/smart_auth` (oidc-provider and axe-core)"


class SmartAuthUnavailableError(RuntimeError):
    """node_modules is missing or the server did not start."""


@dataclass
class SmartAuthServer:
    base_url: str
    session: requests.Session

    def smart_configuration(self, scopes: str) -> dict[str, Any]:
        """What the FHIR server publishes at .well-known/smart-configuration for this server."""
        discovery = self.session.get(f"{self.base_url}/.well-known/openid-configuration", timeout=10).json()
        return {
            "issuer": discovery["issuer"],
            "authorization_endpoint": discovery["authorization_endpoint"],
            "token_endpoint": discovery["token_endpoint"],
            "grant_types_supported": ["authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": scopes.split(" "),
            "response_types_supported": ["code"],
            "capabilities": ["launch-ehr", "client-public", "context-ehr-patient", "permission-v2"],
        }

    def new_launch(self, patient: str, app_context: str | None, access_token_ttl: int | None = None) -> str:
        """Register an EHR launch context (what the EHR does when the user clicks the card's link)."""
        body: dict[str, Any] = {"patient": patient, "appContext": app_context}
        if access_token_ttl is not None:
            body["accessTokenTtl"] = access_token_ttl
        response = self.session.post(f"{self.base_url}/__launches", json=body, timeout=10)
        response.raise_for_status()
        launch: str = response.json()["launch"]
        return launch


@contextmanager
def running_smart_auth(
    *, fhir_base: str, client_id: str, redirect_uri: str, scopes: str
) -> Iterator[SmartAuthServer]:
    if not (AUTH_DIR / "node_modules" / "oidc-provider").is_dir():
        raise SmartAuthUnavailableError(INSTALL_HINT)
    node = find_node_binary()
    config = json.dumps(
        {"fhirBase": fhir_base, "clientId": client_id, "redirectUri": redirect_uri, "scopes": scopes}
    )
    process = subprocess.Popen(
        [str(node), "server.mjs", config],
        cwd=AUTH_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stderr_tail: deque[str] = deque(maxlen=50)
    threading.Thread(
        target=lambda: [lines.put(line) for line in iter(process.stdout.readline, "")], daemon=True
    ).start()  # type: ignore[union-attr]
    threading.Thread(
        target=lambda: [stderr_tail.append(line) for line in iter(process.stderr.readline, "")],  # type: ignore[union-attr]
        daemon=True,
    ).start()
    try:
        try:
            port = int(json.loads(lines.get(timeout=60))["port"])
        except (queue.Empty, ValueError, KeyError) as error:
            raise SmartAuthUnavailableError(
                f"auth server did not start: {''.join(stderr_tail)[-2000:]}"
            ) from error
        session = requests.Session()
        try:
            yield SmartAuthServer(f"http://127.0.0.1:{port}", session)
        finally:
            session.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class _QuietHandler(WSGIRequestHandler):
    """No access log: a callback's query string holds the authorization code."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@contextmanager
def serving() -> Iterator[tuple[str, Callable[[Flask], None]]]:
    """A threaded WSGI server on 127.0.0.1 (ephemeral port); yields (base URL, mount(app)): the app is
    created after the port is known, since its settings name its own public URL."""
    mounted: list[Flask] = []

    def dispatch(environ: dict[str, Any], start_response: Any) -> Any:
        return mounted[0].wsgi_app(environ, start_response)

    server = make_server("127.0.0.1", 0, dispatch, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", mounted.append
    finally:
        server.shutdown()
        thread.join(timeout=10)
