"""What a FHIR server says it supports (`GET {fhirServer}/metadata`), cached per server with a TTL, and
the queries of one call shaped to it.

A server's CapabilityStatement is read once per TTL (inside the hook call's deadline, by the call that
finds it missing; no lock is held while fetching, so one slow server never blocks another tenant's calls).
What it declares shapes the queries:
- a resource type it does not support (no `search-type`, or no `read` for an instance read) is not
  queried: that data category is "not available from this EHR" (a protocol §3a gap, never "none");
- `_sort` it does not declare is dropped and the entries are sorted on our side;
- `combo-code` it does not declare becomes a patient-only search (the parse layer keeps only the
  Observations the protocol reads), so panels with values only in components are still found;
- any other undeclared filter but `patient` is dropped (a wider search, filtered locally); without
  `patient` the search falls back to `subject=Patient/<id>`, else the category is not available;
- a medication search on a server that declares `searchInclude` `<Type>:medication` asks for the
  referenced Medications in the same round (`_include`), so no separate Medication round is needed.
A statement that lists no resources (or no search parameters for a type) says nothing: every query is then
sent as built, exactly as before this module existed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

DEFAULT_TTL_S: Final = 3600.0
_CACHE_SIZE: Final = 256
_SAFE: Final = ":/|,"  # kept readable in rebuilt query strings (FHIR token lists and references)


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
# Query shaping (pure)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapedQuery:
    """`url` to send (None: not available from this server, `reason` says why); `sort_locally`: the
    server will not sort, so the caller sorts the entries newest first."""

    url: str | None
    reason: str = ""
    sort_locally: bool = False


def shape_query(relative_url: str, capabilities: ServerCapabilities) -> ShapedQuery:
    """`relative_url` (`Type/id` or `Type?query`) as this server can answer it."""
    path, _, query = relative_url.partition("?")
    resource_type = path.split("/", 1)[0]
    support = capabilities.support(resource_type)
    is_read = "/" in path and not query
    if support is None:
        return ShapedQuery(None, f"{resource_type} is not in the FHIR server's CapabilityStatement")
    if is_read:
        if support.read:
            return ShapedQuery(relative_url)
        return ShapedQuery(None, f"{resource_type} read is not supported by the FHIR server")
    if not support.search:
        return ShapedQuery(None, f"{resource_type} search is not supported by the FHIR server")
    shaped = (
        ShapedQuery(relative_url)
        if support.params is None
        else _shape_params(resource_type, parse_qsl(query, keep_blank_values=True), support.params)
    )
    include = f"{resource_type}:medication"
    if shaped.url is not None and include in support.includes:
        separator = "&" if "?" in shaped.url else "?"
        return ShapedQuery(f"{shaped.url}{separator}_include={include}", sort_locally=shaped.sort_locally)
    return shaped


def _shape_params(resource_type: str, pairs: list[tuple[str, str]], params: frozenset[str]) -> ShapedQuery:
    kept: list[tuple[str, str]] = []
    sort_locally = False
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base in params:
            kept.append((name, value))
        elif base == "patient":
            if "subject" not in params:
                return ShapedQuery(None, f"{resource_type} cannot be searched by patient on the FHIR server")
            kept.append(("subject", f"Patient/{value}"))
        elif base == "_sort":
            sort_locally = True
        # combo-code, _count and any other filter: dropped (wider search, filtered by the parse layer)
    query = urlencode(kept, safe=_SAFE, quote_via=quote)
    return ShapedQuery(f"{resource_type}?{query}" if query else resource_type, sort_locally=sort_locally)


def newest_first(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries sorted by their resource's clinical date, newest first (undated last); stable."""
    return sorted(entries, key=_date_key, reverse=True)


def _date_key(entry: Mapping[str, Any]) -> str:
    resource = entry.get("resource")
    if not isinstance(resource, dict):
        return ""
    period = resource.get("effectivePeriod")
    for value in (
        resource.get("effectiveDateTime"),
        period.get("start") if isinstance(period, dict) else None,
        resource.get("issued"),
    ):
        if isinstance(value, str):
            return value
    return ""


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
