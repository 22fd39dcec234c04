"""URL normalisation and the expected JWT `aud` per endpoint (built from configuration, never from Host)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Final, Literal
from urllib.parse import urlsplit

Endpoint = Literal["discovery", "service", "feedback"]

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
LOOPBACK_ALIASES: Final = frozenset({"localhost", "127.0.0.1"})


def normalise_url(url: str, *, strip_trailing_slash: bool = True) -> str:
    """`scheme://host[:port]/path` with scheme and host lower-cased and the default port dropped.

    Raises ValueError for anything but a plain http(s) URL with a host (no userinfo, query or fragment).
    The path is kept exactly (case and percent-encoding), minus one trailing slash when asked.
    """
    if not isinstance(url, str) or not url or any(ch.isspace() or ord(ch) < 0x21 for ch in url):
        raise ValueError("not a URL")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("the scheme must be http or https")
    if "@" in parts.netloc:
        raise ValueError("user information is not allowed in the URL")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("a query or fragment is not allowed in the URL")
    host = parts.hostname
    port = parts.port  # raises ValueError on a bad port
    if not host:
        raise ValueError("the URL has no host")
    host = host.lower()
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port is None or port == DEFAULT_PORTS[scheme] else f"{shown_host}:{port}"
    path = parts.path
    if strip_trailing_slash:
        path = path.rstrip("/")
    return f"{scheme}://{netloc}{path}"


def normalise_base_url(url: str) -> str:
    """CDS_PUBLIC_BASE_URL normalised, trailing slash stripped (the URL under which /cds-services lives)."""
    return normalise_url(url, strip_trailing_slash=True)


def expected_audience(base_url: str, endpoint: Endpoint, service_id: str) -> str:
    """`{base}/cds-services`, `{base}/cds-services/{id}` or `{base}/cds-services/{id}/feedback`."""
    if endpoint == "discovery":
        return f"{base_url}/cds-services"
    if endpoint == "service":
        return f"{base_url}/cds-services/{service_id}"
    return f"{base_url}/cds-services/{service_id}/feedback"


@lru_cache(maxsize=64)  # a pure function of the URL: the configured audiences and the few `aud` clients send
def _comparable(url: str, *, loopback_equivalent: bool) -> str | None:
    try:
        normal = normalise_url(url, strip_trailing_slash=False)
    except ValueError:
        return None
    if not loopback_equivalent:
        return normal
    parts = urlsplit(normal)
    if parts.hostname in LOOPBACK_ALIASES:
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://127.0.0.1{port}{parts.path}"
    return normal


def audience_matches(aud: object, expected: Iterable[str], *, loopback_equivalent: bool = False) -> bool:
    """True when `aud` (a string, or an array of strings) contains one of the expected URLs.

    Compared exactly after lower-casing scheme and host and dropping a default port; with
    `loopback_equivalent` (dev/off) `localhost` and `127.0.0.1` count as the same host.
    """
    if isinstance(aud, str):
        claimed = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(item, str) for item in aud):
        claimed = list(aud)
    else:
        return False
    wanted = {_comparable(url, loopback_equivalent=loopback_equivalent) for url in expected}
    wanted.discard(None)
    return any(_comparable(item, loopback_equivalent=loopback_equivalent) in wanted for item in claimed)
