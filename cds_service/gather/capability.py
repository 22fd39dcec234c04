"""What a FHIR server declares in its CapabilityStatement (`GET {fhirServer}/metadata`): the FHIR version
(only R4 (4.0.x) and R4B (4.3.x) are read) and the resource types, interactions and search parameters it
supports, cached per server with a TTL (process-wide, bounded).

The statement is read by the hook call that finds the entry missing or expired, inside that call's
deadline; no lock is held while fetching, so one slow server never blocks another tenant's calls.
`query_shape.py` shapes one call's queries to it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cds_service.core.errors import NotR4Server
from cds_service.gather.fhir_urls import SERVER_EXPRESSION

R4_VERSION_PREFIXES: Final = ("4.0.", "4.3.")
R4_REQUIRED_HINT: Final = (
    "FHIR R4 is required. The CDS Hooks sandbox defaults to a DSTU2 server; point it at an R4 server "
    "with ?fhirServiceUrl=https://<your R4 server>"
)
DEFAULT_TTL_S: Final = 3600.0
_CACHE_SIZE: Final = 256
_VERSION_RE: Final = re.compile(r"[0-9A-Za-z.\-]{1,20}")


def r4_version(metadata: dict[str, Any] | None) -> str:
    """The declared fhirVersion when it is R4; NotR4Server otherwise (an unknown version is not echoed)."""
    version = metadata.get("fhirVersion") if metadata is not None else None
    if not isinstance(version, str) or not version.startswith(R4_VERSION_PREFIXES):
        shown = version if isinstance(version, str) and _VERSION_RE.fullmatch(version) else "not stated"
        raise NotR4Server(
            f"The FHIR server's CapabilityStatement declares fhirVersion {shown}. {R4_REQUIRED_HINT}",
            SERVER_EXPRESSION,
            "not-supported",
        )
    return version


@dataclass(frozen=True)
class TypeSupport:
    """One resource type of a CapabilityStatement."""

    search: bool
    read: bool
    params: frozenset[str] | None  # None: no searchParam declared, so none is known to be missing
    includes: frozenset[str] = (
        frozenset()
    )  # declared `searchInclude` values, e.g. MedicationRequest:medication


@dataclass(frozen=True)
class ServerCapabilities:
    """`types` None: the server declared nothing usable, every query is assumed supported."""

    types: Mapping[str, TypeSupport] | None

    def support(self, resource_type: str) -> TypeSupport | None:
        """The type's support; None when the statement lists types and this one is not among them."""
        if self.types is None:
            return TypeSupport(search=True, read=True, params=None)
        return self.types.get(resource_type)


UNKNOWN: Final = ServerCapabilities(types=None)


def parse_capability_statement(body: Mapping[str, Any]) -> ServerCapabilities:
    """The server-mode `rest` part of a CapabilityStatement; UNKNOWN when it lists no resource."""
    rests = body.get("rest")
    servers = [r for r in rests if isinstance(r, dict)] if isinstance(rests, list) else []
    server = next((r for r in servers if r.get("mode", "server") == "server"), None)
    if server is None or not isinstance(server.get("resource"), list) or not server["resource"]:
        return UNKNOWN
    common = _names(server.get("searchParam"))
    types: dict[str, TypeSupport] = {}
    for resource in server["resource"]:
        if not isinstance(resource, dict) or not isinstance(resource.get("type"), str):
            continue
        codes = {i.get("code") for i in resource.get("interaction") or [] if isinstance(i, dict)}
        params = _names(resource.get("searchParam"))
        includes = resource.get("searchInclude")
        types[resource["type"]] = TypeSupport(
            search="search-type" in codes,
            read="read" in codes,
            params=None if not params else frozenset(params | common),
            includes=frozenset(i for i in includes if isinstance(i, str))
            if isinstance(includes, list)
            else frozenset(),
        )
    return ServerCapabilities(types=types) if types else UNKNOWN


def _names(params: Any) -> set[str]:
    if not isinstance(params, list):
        return set()
    return {p["name"] for p in params if isinstance(p, dict) and isinstance(p.get("name"), str)}


# ---------------------------------------------------------------------------------------------------------
# Process-wide cache
# ---------------------------------------------------------------------------------------------------------


class CapabilityCache:
    """Bounded, thread-safe `base URL -> (capabilities, fetched at)`; entries expire after `ttl_s`."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[ServerCapabilities, float]] = OrderedDict()

    def get(self, base: str) -> ServerCapabilities | None:
        with self._lock:
            entry = self._entries.get(base)
            if entry is None:
                return None
            if self._clock() - entry[1] >= self.ttl_s:
                del self._entries[base]
                return None
            return entry[0]

    def put(self, base: str, capabilities: ServerCapabilities) -> None:
        with self._lock:
            self._entries[base] = (capabilities, self._clock())
            self._entries.move_to_end(base)
            while len(self._entries) > _CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_cache = CapabilityCache()


def capability_cache() -> CapabilityCache:
    return _cache


def configure_capability_cache(ttl_s: float) -> None:
    """Set the TTL (app start-up) and forget every server."""
    global _cache  # noqa: PLW0603 - one cache per process, configured from settings
    _cache = CapabilityCache(ttl_s)
