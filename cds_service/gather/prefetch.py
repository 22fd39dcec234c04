"""Prefetch templates we publish, and the CDS Hooks 2.0 rules for resolving what the client sent.

Per key: a supplied resource or Bundle is used as is; JSON `null` means "no data" and is never re-queried;
an absent key, or an OperationOutcome in its place, is fetched from `fhirServer`; a prefetched Bundle with a
`next` link is completed from `fhirServer`. A record that cannot be completed raises DataUnavailable (412)
naming `prefetch.<key>`: the service never evaluates partial data.

Two exceptions, both reported in `RecordData.unavailable` (key -> why) so that the protocol treats the
category as unknown (a §3a gap), never as "the patient has none":
- the key's failure policy is `omit` (per issuer, see ehr_profile.py) and it could not be obtained;
- fhirServer's CapabilityStatement shows that it cannot answer that query at all (fhir/capability.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

from cds_service.core.errors import BadRequest, DataUnavailable, NotR4Server
from cds_service.gather.bundles import JsonObject, bundle_entries, next_link
from cds_service.gather.capability import R4_REQUIRED_HINT
from cds_service.gather.client import FhirClient
from cds_service.gather.query_shape import newest_first, server_capabilities, shape_query

PATIENT_ID_TOKEN: Final = "{{context.patientId}}"  # noqa: S105 - a CDS Hooks prefetch token

PREFETCH_RESOURCE_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "patient": "Patient",
        "dxa": "Observation",
        "labs": "Observation",
        "conditions": "Condition",
        "procedures": "Procedure",
        "allergies": "AllergyIntolerance",
        "medicationStatements": "MedicationStatement",
        "medicationRequests": "MedicationRequest",
        "medicationAdministrations": "MedicationAdministration",
        "medicationDispenses": "MedicationDispense",
    }
)
"""Prefetch key -> the FHIR resource type its template returns (key names are fixed: sites copy them)."""

_CODED_KEYS: Final = frozenset({"dxa", "labs"})
_FHIR_SEARCH_ESCAPES: Final = str.maketrans({"\\": "\\\\", "|": "\\|", ",": "\\,", "$": "\\$"})
_KEEP_READABLE: Final = ":/"


@dataclass(frozen=True)
class RecordData:
    """The patient's raw FHIR data per prefetch key, complete or not at all.

    `resources[key]` lists the resource dicts exactly as received (not copied); `full_urls[key]` is the
    parallel list of each resource's Bundle `fullUrl` (None for a bare prefetched resource), read from
    `entries` (the Bundle entries) only when asked for. Every template key is present. Duplicates are
    kept: the parse layer removes them.
    """

    resources: dict[str, list[dict[str, Any]]]
    fetched_keys: tuple[str, ...]
    pages_fetched: int
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> why it is not available (no PHI)
    entries: dict[str, list[JsonObject]] = field(default_factory=dict, repr=False)

    @property
    def full_urls(self) -> dict[str, list[str | None]]:
        return {
            key: [url if isinstance(url := entry.get("fullUrl"), str) else None for entry in found]
            for key, found in self.entries.items()
        }


# ---------------------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------------------


def build_prefetch_templates(
    dxa_codes: Sequence[tuple[str, str]], lab_codes: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """The prefetch templates for discovery, one per key of PREFETCH_RESOURCE_TYPES, in that order."""
    patient = f"patient={PATIENT_ID_TOKEN}"
    templates: dict[str, str] = {}
    for key, resource_type in PREFETCH_RESOURCE_TYPES.items():
        if key == "patient":
            templates[key] = f"Patient/{PATIENT_ID_TOKEN}"
        elif key in _CODED_KEYS:
            codes = dxa_codes if key == "dxa" else lab_codes
            # `combo-code` (FHIR R4: Observation.code | Observation.component.code) also finds a panel
            # whose values are only in components (protocol §3c Panels), e.g. one DXA panel per scan.
            templates[key] = f"{resource_type}?{patient}&combo-code={_token_list(codes, key)}&_sort=-date"
        else:
            templates[key] = f"{resource_type}?{patient}"
    return templates


def _token_list(codes: Sequence[tuple[str, str]], key: str) -> str:
    """`system|code,system|code` with duplicates removed (first occurrence kept) and values encoded."""
    unique = list(dict.fromkeys(codes))
    if not unique:
        raise ValueError(f"no codes given for the {key!r} prefetch template")
    for system, code in unique:
        if not system or not code:
            raise ValueError(f"a {key!r} code needs both a system and a code: {(system, code)!r}")
    return ",".join(f"{_encode_token_part(system)}|{_encode_token_part(code)}" for system, code in unique)


def _encode_token_part(value: str) -> str:
    """FHIR search escaping of `\\ | , $`, then percent-encoding of all but unreserved characters and `:/`."""
    return quote(value.translate(_FHIR_SEARCH_ESCAPES), safe=_KEEP_READABLE)


def substitute(template: str, patient_id: str) -> str:
    """The template with `{{context.patientId}}` replaced by the URL-encoded patient id."""
    query = template.replace(PATIENT_ID_TOKEN, quote(patient_id, safe=""))
    if "{{" in query:
        raise ValueError("prefetch template uses a token other than {{context.patientId}}")
    return query


# ---------------------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    entries: dict[str, list[JsonObject]] = field(default_factory=dict)
    to_fetch: dict[str, str] = field(default_factory=dict)
    to_complete: dict[str, JsonObject] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    def give_up(self, key: str, reason: str) -> None:
        """`key` counts as not available: no entries at all (never a partial first page)."""
        self.unavailable[key] = reason
        self.entries[key] = []


def resolve_prefetch(
    templates: Mapping[str, str],
    request_prefetch: Mapping[str, Any] | None,
    patient_id: str,
    client: FhirClient | None,
    no_client_reason: str = "no fhirServer was given to fetch it from",
    *,
    omit_keys: Collection[str] = (),
) -> RecordData:
    """Every template key's data: as prefetched where supplied, else fetched in parallel from fhirServer.

    A key in `omit_keys` that cannot be obtained is reported in `unavailable` instead of raising.
    Raises BadRequest (malformed prefetch value), NotR4Server (DSTU2 content or server) or DataUnavailable.
    """
    if not patient_id:
        raise BadRequest("context.patientId is required", "context.patientId")
    plan = _plan(templates, request_prefetch or {}, patient_id)
    pages = _fetch_missing(plan, client, no_client_reason, frozenset(omit_keys))
    entries = {key: plan.entries[key] for key in templates}
    return RecordData(
        resources={key: [entry["resource"] for entry in found] for key, found in entries.items()},
        fetched_keys=tuple(key for key in templates if key in plan.to_fetch and key not in plan.unavailable),
        pages_fetched=pages,
        unavailable={key: plan.unavailable[key] for key in templates if key in plan.unavailable},
        entries=entries,
    )


def _plan(templates: Mapping[str, str], supplied: Mapping[str, Any], patient_id: str) -> _Plan:
    """Sort keys into used as supplied / fetched / completed; checks every supplied value first."""
    plan = _Plan()
    for key, template in templates.items():
        value = supplied.get(key)
        if key not in supplied or _is_operation_outcome(value):
            plan.to_fetch[key] = substitute(template, patient_id)
        elif value is None:
            plan.entries[key] = []
        else:
            entries = _check_supplied(key, value)
            if value["resourceType"] == "Bundle":
                plan.entries[key] = entries
                if next_link(value) is not None:
                    plan.to_complete[key] = value
            else:
                plan.entries[key] = [{"resource": value}]
    return plan


def _fetch_missing(
    plan: _Plan, client: FhirClient | None, no_client_reason: str, omit: frozenset[str]
) -> int:
    """Fetch absent keys and later pages in one parallel round; returns the number of pages fetched."""
    wanted = [*plan.to_fetch, *(key for key in plan.to_complete if key not in plan.to_fetch)]
    if not wanted:
        return 0
    if client is None:
        required = [key for key in wanted if key not in omit]
        if required:
            raise DataUnavailable(
                f"Prefetch '{required[0]}' is missing or incomplete and {no_client_reason}",
                f"prefetch.{required[0]}",
            )
        for key in wanted:
            plan.give_up(key, f"missing or incomplete and {no_client_reason}")
        return 0
    urls, sort_locally = _shaped_urls(plan, client)
    by_url: dict[str, list[str]] = {}
    for key, url in urls.items():
        by_url.setdefault(url, []).append(key)  # dxa and labs may become the same patient-only search
    unique = {keys[0]: url for url, keys in by_url.items()}
    optional = {keys[0] for keys in by_url.values() if omit.issuperset(keys)}
    optional |= omit.intersection(plan.to_complete)
    failures: dict[str, DataUnavailable] = {}

    def tolerant(key: str, task: Callable[[], list[JsonObject]]) -> Callable[[], list[JsonObject]]:
        """Policy omit: a failure gives [] and is recorded, unless the call's deadline has passed."""

        def run() -> list[JsonObject]:
            try:
                return task()
            except NotR4Server:
                raise
            except DataUnavailable as error:
                if client.deadline_reached():
                    raise
                failures[key] = error
                return []

        return run if key in optional else task

    before = client.pages_fetched
    fetched = client.gather_entries(unique, plan.to_complete, expression_prefix="prefetch.", wrap=tolerant)
    for key in plan.to_complete:
        plan.entries[key] = plan.entries[key] + fetched[key]
    for keys in by_url.values():
        for key in keys:
            found = fetched[keys[0]]
            plan.entries[key] = newest_first(found) if key in sort_locally else found
    for key, error in failures.items():
        for same in [key, *next((k[1:] for k in by_url.values() if k[0] == key), [])]:
            issue = error.issues[0] if error.issues else None
            plan.give_up(same, issue.diagnostics if issue else "could not be obtained from fhirServer")
    return client.pages_fetched - before


def _shaped_urls(plan: _Plan, client: FhirClient) -> tuple[dict[str, str], set[str]]:
    """The absent keys' queries as fhirServer can answer them; unanswerable keys are given up."""
    if not plan.to_fetch:
        return {}, set()
    capabilities = server_capabilities(client)
    urls: dict[str, str] = {}
    sort_locally: set[str] = set()
    for key, url in plan.to_fetch.items():
        shaped = shape_query(url, capabilities)
        if shaped.url is None:
            plan.give_up(key, shaped.reason)
            continue
        urls[key] = shaped.url
        if shaped.sort_locally:
            sort_locally.add(key)
    return urls, sort_locally


def _is_operation_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def _check_supplied(key: str, value: Any) -> list[JsonObject]:
    """A supplied value must be a FHIR R4 resource or Bundle (JSON object with a resourceType).

    Returns the value's Bundle entries (as `bundle_entries` selects them; empty for a single resource),
    checked for DSTU2 content in the same pass: the value itself first, then each kept entry in order."""
    if not isinstance(value, dict) or not isinstance(resource_type := value.get("resourceType"), str):
        raise BadRequest(
            f"Prefetch '{key}' must be a FHIR resource, a Bundle or null", f"prefetch.{key}", "structure"
        )
    if resource_type in _DSTU2_SIGNAL_TYPES:
        _refuse_dstu2(key, value)
    entries = value.get("entry")
    if not isinstance(entries, list):
        return []
    plain = _plain_entries(entries)
    return plain if plain is not None else _checked_entries(key, entries)


def _plain_entries(entries: list[Any]) -> list[JsonObject] | None:
    """All the entries, when each is an object holding a resource object, none is an OperationOutcome or a
    `search.mode = outcome` entry and none shows a DSTU2 sign: found by C-level passes (`map` over
    `dict.get`) instead of a Python loop per entry. None when any entry needs `_checked_entries`."""
    try:
        resources = list(map(_GET, entries, repeat("resource")))
        types = list(map(_GET, resources, repeat("resourceType")))
        searches = filter(None, map(_GET, entries, repeat("search")))  # None, {}: no outcome mode
        modes = list(map(_GET, searches, repeat("mode")))
    except TypeError:  # an entry, resource or search that is not a JSON object
        return None
    if "OperationOutcome" in types or "outcome" in modes or "MedicationOrder" in types:
        return None
    if "Condition" in types:
        conditions = [found for found, kind in zip(resources, types, strict=True) if kind == "Condition"]
        for element in _CONDITION_DSTU2_ELEMENTS:
            if any(map(str.__instancecheck__, map(_GET, conditions, repeat(element)))):
                return None
    return list(entries)


def _checked_entries(key: str, entries: list[Any]) -> list[JsonObject]:
    """`bundle_entries`, then the DSTU2 check of each kept entry in order (the careful path)."""
    kept = bundle_entries({"entry": entries})
    for entry in kept:
        resource_type = entry["resource"].get("resourceType")
        if isinstance(resource_type, str) and resource_type in _DSTU2_SIGNAL_TYPES:  # a list is no type
            _refuse_dstu2(key, entry["resource"])
    return kept


def _refuse_dstu2(key: str, resource: Mapping[str, Any]) -> None:
    """Raise NotR4Server when `resource` shows a clear sign of DSTU2 content."""
    signal = _dstu2_signal(resource)
    if signal is not None:
        raise NotR4Server(
            f"Prefetch '{key}' holds FHIR DSTU2 content ({signal}). {R4_REQUIRED_HINT}",
            f"prefetch.{key}",
            "not-supported",
        )


_DSTU2_SIGNAL_TYPES: Final = frozenset({"MedicationOrder", "Condition"})  # the types _dstu2_signal reads
_CONDITION_DSTU2_ELEMENTS: Final = ("clinicalStatus", "verificationStatus")  # DSTU2: a plain code string
_GET: Final[Callable[[Any, str], Any]] = dict.get  # TypeError for anything but a JSON object


def _dstu2_signal(resource: Mapping[str, Any]) -> str | None:
    """A clear, cheap sign of DSTU2 content, or None."""
    resource_type = resource.get("resourceType")
    if resource_type == "MedicationOrder":
        return "a MedicationOrder resource"
    if resource_type == "Condition":
        for element in _CONDITION_DSTU2_ELEMENTS:
            if isinstance(resource.get(element), str):
                return f"Condition.{element} as a plain code"
    return None
