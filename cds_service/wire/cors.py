"""CORS for browser clients (the CDS Hooks sandbox): allow-listed origins, preflight answered first.

No credentials are ever allowed (the service sets no cookies), and the admin routes never get CORS headers.
"""

from __future__ import annotations

import logging

from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

logger = logging.getLogger(__name__)

CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = "600"
ADMIN_PREFIX = "/admin/"
_ORIGIN_LOGGED_CHARS = 64
_MAX_REFUSED_LOGGED = 100


class Cors:
    """Allow-listed origins (or `*`); no credentials are ever allowed (the service sets no cookies)."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self._any = "*" in origins
        self._origins = frozenset(origins)
        self._refused_logged: set[str] = set()

    def allowed(self, origin: str | None) -> str | None:
        if self._any:
            return "*"
        if origin is None:
            return None
        if origin.lower() in self._origins:
            return origin
        self._log_refused(origin)
        return None

    def _log_refused(self, origin: str) -> None:
        """One WARNING per refused origin (per worker, at most _MAX_REFUSED_LOGGED distinct ones)."""
        key = origin.lower()[:_ORIGIN_LOGGED_CHARS]
        if key in self._refused_logged or len(self._refused_logged) >= _MAX_REFUSED_LOGGED:
            return
        self._refused_logged.add(key)
        logger.warning(
            "CORS: origin %r is not allowed (no CORS headers sent); add it to CDS_CORS_ORIGINS to allow it",
            key,
        )

    def apply(self, response: Response) -> Response:
        if request.path.startswith(ADMIN_PREFIX):
            return response  # the admin report is for operators, never for browsers
        response.vary.add("Origin")
        allowed = self.allowed(request.headers.get("Origin"))
        if allowed is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE_S
            if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
                response.headers["Access-Control-Allow-Private-Network"] = "true"
        return response


def answer_preflight() -> Response | None:
    """Answer every OPTIONS request first (CORS preflight); CORS headers are added by Cors.apply."""
    if request.method != "OPTIONS" or request.path.startswith(ADMIN_PREFIX) or not _is_route(request.path):
        return None  # an unknown path is a 404 OperationOutcome, whatever the method
    response = Response(status=204)
    response.headers["Allow"] = CORS_METHODS
    del response.headers["Content-Type"]
    return response


def _is_route(path: str) -> bool:
    """True when some route of the app matches `path` (any method)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        adapter.match(path, method="OPTIONS")
    except MethodNotAllowed:
        return True
    except HTTPException:
        return False
    return True
