"""Reading a FHIR server's JSON answers (pure): a JSON object, a Bundle's data entries and `next` link."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from cds_service.core.errors import DataUnavailable
from cds_service.gather.fhir_urls import SERVER_EXPRESSION

JsonObject = dict[str, Any]


def bundle_entries(bundle: Mapping[str, Any]) -> list[JsonObject]:
    """The entries of a Bundle that carry a resource, minus OperationOutcomes and `search.mode = outcome`.

    Entries are returned as they are (not copied), so `fullUrl` stays next to its `resource`.
    """
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if _is_data_entry(entry)]


def _is_data_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    resource = entry.get("resource")
    if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
        return False
    search = entry.get("search")
    return not (isinstance(search, dict) and search.get("mode") == "outcome")


def next_link(bundle: Mapping[str, Any]) -> str | None:
    """The URL of the Bundle's `next` link, if any."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def is_read(relative_url: str) -> bool:
    """True for an instance read (`Type/id`, no query), false for a search (`Type?...`, `Type`)."""
    return "?" not in relative_url and len(relative_url.strip("/").split("/")) == 2


def json_object(body: bytes, kind: str) -> JsonObject:
    """The JSON object a FHIR server answered; anything else is DataUnavailable (never echoes the body)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise DataUnavailable(
            f"The FHIR server's answer to a {kind} request is not a JSON object", SERVER_EXPRESSION
        )
    return parsed
