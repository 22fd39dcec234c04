"""Medications referenced but not supplied: fetched from fhirServer in ONE batched round (protocol §3c).

A MedicationStatement/Request/Administration/Dispense may name its drug only by `medicationReference`
(Epic). When that Medication is neither contained nor in the data, it is fetched with `Medication?_id=a,b,c`
(never one read per resource) if the reference is relative or points at fhirServer. A server whose
CapabilityStatement offers no `_id` search on Medication gets the reads `Medication/<id>` instead, all in
parallel as one round; one that offers no Medication at all is not asked. A failed round is not
an error of the call: the references are then identified by their `display`, else counted as unreadable
(clinical.relevance / extract_medications). Only ids are read from the data; nothing is logged but counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from cds_service.core.errors import DataUnavailable
from cds_service.core.fhir_id import is_fhir_id
from cds_service.facts.parsed_resources import MEDICATION_USE_TYPES
from cds_service.facts.relevance import ignored_by_status, reference_key
from cds_service.gather.capability import ServerCapabilities
from cds_service.gather.client import FhirClient
from cds_service.gather.query_shape import server_capabilities

log = logging.getLogger(__name__)

IDS_PER_QUERY = 50  # ids per `_id` search; several searches run in parallel as one round


def _supplied_keys(resources: Iterable[dict[str, Any]]) -> set[str]:
    keys: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
            keys.add(f"Medication/{resource['id']}")
    return keys


def _contained_ids(resource: dict[str, Any]) -> set[str]:
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return set()
    return {str(item.get("id")) for item in contained if isinstance(item, dict)}


def _on_server(target: str, base_url: str) -> bool:
    """A relative reference, or an absolute one under fhirServer's base."""
    if "://" not in target:
        return not target.startswith(("urn:", "#"))
    return target.startswith(base_url.rstrip("/") + "/")


def missing_medication_ids(resources: list[dict[str, Any]], base_url: str) -> list[str]:
    """Ids of Medications referenced (relative or on fhirServer) and neither contained nor supplied."""
    supplied = _supplied_keys(resources)
    wanted: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") not in MEDICATION_USE_TYPES or ignored_by_status(resource):
            continue
        if resource.get("medicationCodeableConcept") is not None:
            continue
        reference = resource.get("medicationReference")
        target = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(target, str) or not target or target.startswith("#"):
            continue
        key = reference_key(target)
        if key is None or not key.startswith("Medication/") or key in supplied:
            continue
        if key.split("/", 1)[1] in _contained_ids(resource) or not _on_server(target, base_url):
            continue
        medication_id = key.split("/", 1)[1]
        if is_fhir_id(medication_id):
            wanted.add(medication_id)
    return sorted(wanted)


def _queries(ids: list[str], capabilities: ServerCapabilities) -> dict[str, str]:
    """`Medication?_id=` searches of IDS_PER_QUERY ids, else one read per id, else nothing."""
    support = capabilities.support("Medication")
    if support is None:
        return {}
    if support.search and (support.params is None or "_id" in support.params):
        chunks = [ids[i : i + IDS_PER_QUERY] for i in range(0, len(ids), IDS_PER_QUERY)]
        return {f"medications{n}": f"Medication?_id={','.join(chunk)}" for n, chunk in enumerate(chunks)}
    if support.read:
        return {f"medication{n}": f"Medication/{medication_id}" for n, medication_id in enumerate(ids)}
    return {}


def fetch_missing_medications(client: FhirClient, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The referenced Medications fetched in one batched round; [] when none is missing or it fails."""
    ids = missing_medication_ids(resources, client.base_url)
    if not ids:
        return []
    try:
        urls = _queries(ids, server_capabilities(client))
        if not urls:
            log.warning("the FHIR server offers no Medication read or search: identified by display")
            return []
        found = client.search_many(urls, expression_prefix="medicationReference.")
    except DataUnavailable as error:  # NotR4Server included: fall back to display, never fail the call
        log.warning(
            "referenced Medication fetch failed (%s): identified by display, else unreadable",
            type(error).__name__,
        )
        return []
    wanted = set(ids)
    return [
        resource
        for entries in found.values()
        for resource in entries
        if isinstance(resource, dict)
        and resource.get("resourceType") == "Medication"
        and resource.get("id") in wanted
    ]
