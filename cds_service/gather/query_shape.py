"""One hook call's FHIR queries shaped to what the server declares (capability.py), pure.

- a resource type it does not support (no `search-type`, or no `read` for an instance read) is not
  queried: that data category is "not available from this EHR" (a protocol §3a gap, never "none");
- `_sort` it does not declare is dropped and the entries are sorted on our side (`newest_first`);
- `combo-code` it does not declare becomes a patient-only search (the parse layer keeps only the
  Observations the protocol reads), so panels with values only in components are still found;
- any other undeclared filter but `patient` is dropped (a wider search, filtered locally); without
  `patient` the search falls back to `subject=Patient/<id>`, else the category is not available;
- a medication search on a server that declares `searchInclude` `<Type>:medication` asks for the
  referenced Medications in the same round (`_include`), so no separate Medication round is needed.
A statement that lists no resources (or no search parameters for a type) says nothing: every query is then
sent as built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

from cds_service.gather.capability import UNKNOWN, ServerCapabilities, capability_cache
from cds_service.gather.client import FhirClient

_SAFE: Final = ":/|,"  # kept readable in rebuilt query strings (FHIR token lists and references)


def server_capabilities(client: FhirClient) -> ServerCapabilities:
    """What the client's server declares: cached, else read now (NotR4Server, or a 412 naming fhirServer
    when the statement cannot be read, as the R4 check always required)."""
    cached = capability_cache().get(client.base_url)
    if cached is None:
        client.check_server()
        cached = capability_cache().get(client.base_url)
    return cached or UNKNOWN


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
