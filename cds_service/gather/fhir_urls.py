"""The fhirServer address and the bearer header the client sends, validated (pure).

An origin is (scheme, host, port) with default ports filled in: the client follows only URLs on the
fhirServer origin under its base path, and sends the token only there.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote, urlsplit

from cds_service.core.errors import BadRequest

SERVER_EXPRESSION: Final = "fhirServer"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]+")
_RESOURCE_TYPE_RE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")

Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin | None:
    """(scheme, host, port) with defaults filled in, or None when the URL is not a plain http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def has_dot_segment(path: str) -> bool:
    return any(unquote(segment) in {".", ".."} for segment in path.split("/"))


def normalise_base(base_url: str) -> tuple[str, Origin, str]:
    """Validate `fhirServer` and return (base without trailing slash, origin, base path)."""
    origin = origin_of(base_url)
    parts = urlsplit(base_url) if origin is not None else None
    if parts is None or origin is None or parts.query or parts.fragment or has_dot_segment(parts.path):
        raise BadRequest("fhirServer is not a usable http(s) FHIR base URL", SERVER_EXPRESSION)
    base = base_url.rstrip("/")
    return base, origin, urlsplit(base).path


def resource_type_of(url: str, base_path: str) -> str:
    """The first path segment after the base path when it looks like a resource type; '-' otherwise."""
    path = urlsplit(url).path
    rest = path[len(base_path) :].lstrip("/") if path.startswith(base_path) else ""
    first = rest.split("/", 1)[0]
    return first if _RESOURCE_TYPE_RE.fullmatch(first) else "-"


def is_on_server(url: str, server_origin: Origin, base_path: str) -> bool:
    """Same scheme, host and port as fhirServer, and a path under its base path."""
    if origin_of(url) != server_origin:
        return False
    path = urlsplit(url).path
    if has_dot_segment(path):
        return False
    return path == base_path or path.startswith(base_path + "/")


def bearer(access_token: str | None) -> str | None:
    """The Authorization header value; the token itself is never echoed in an error."""
    if not access_token:
        return None
    if not _TOKEN_RE.fullmatch(access_token):
        raise BadRequest(
            "fhirAuthorization.access_token is not a usable bearer token", "fhirAuthorization.access_token"
        )
    return f"Bearer {access_token}"
