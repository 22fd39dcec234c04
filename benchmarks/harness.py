"""In-process calls through the real Flask app: request bytes in, response bytes out (no sockets).

`WsgiCaller` builds a minimal WSGI environ around the exact request bytes and collects the
response body, so the time measured is the app's (routing, auth, body read, parse, pipeline,
ledger, JSON out) and not a test client's.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

SERVICE_PATH = "/cds-services/osteoporosis-escalation"


@contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ updated with `env` for the duration (the app may read variables at build time)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_app(env: Mapping[str, str]) -> Any:
    """The production Flask app (cds_service.app.create_app) under `env`."""
    from cds_service.app import create_app  # noqa: PLC0415
    from cds_service.config import load_settings  # noqa: PLC0415
    from cds_service.gunicorn_conf import tune_gc_after_worker_init  # noqa: PLC0415

    with environment(env):
        app = create_app(load_settings())
    tune_gc_after_worker_init()  # what every gunicorn worker does after loading the app
    return app


class WsgiCaller:
    """POSTs bytes to a WSGI app in-process; returns (status code, response body bytes)."""

    def __init__(
        self, app: Callable[..., Any], path: str = SERVICE_PATH, host: str = "127.0.0.1:8000"
    ) -> None:
        self.app = app
        self.path = path
        self.host, _, port = host.partition(":")
        self.port = port or "80"

    def environ(self, body: bytes, token: str | None) -> dict[str, Any]:
        env: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": self.path,
            "QUERY_STRING": "",
            "SERVER_NAME": self.host,
            "SERVER_PORT": self.port,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": f"{self.host}:{self.port}",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if token is not None:
            env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return env

    def __call__(self, body: bytes, token: str | None = None) -> tuple[int, bytes]:
        status: list[str] = []

        def start_response(line: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
            status.append(line)
            return lambda _data: None

        result = self.app(self.environ(body, token), start_response)
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return int(status[0].split(" ", 1)[0]), payload
