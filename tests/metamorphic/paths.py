"""The ways a record reaches the engine: the offline evaluator, and the HTTP app via prefetch, via a mocked
FHIR server (with paging and server-only resources) and via the real FHIR server process.

Each path returns the decision object (protocol §9) of the call.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
import responses
from flask.testing import FlaskClient

from cds_service.config import Settings
from cds_service.gather.prefetch import PREFETCH_RESOURCE_TYPES
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.offline import bundle_resources, evaluate_bundle
from cds_service.wire.service import PatientViewService
from tests.metamorphic.transforms import PANEL_TEXT, Record, is_dxa_value, is_lab, observation_kind
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request_for_bundle

FHIR_BASE = "https://fhir.example.org/r4"
TOKEN = "metamorphic-access-token-789"
URL = "/cds-services/osteoporosis-escalation"
FHIR_JSON = "application/fhir+json"

# The search keys that select by resource type alone (the service's own table; the patient read and the two
# Observation searches are grouped separately).
PREFETCH_TYPES: dict[str, str] = {
    key: rtype for key, rtype in PREFETCH_RESOURCE_TYPES.items() if key not in ("patient", "dxa", "labs")
}


def as_bundle(record: Record, bundle_type: str = "collection") -> dict[str, Any]:
    """The whole record (supplied and server-only resources) as one Bundle (the offline evaluator's input)."""
    entries = []
    for resource in record.all_resources():
        entry: dict[str, Any] = {
            "fullUrl": f"{FHIR_BASE}/{resource['resourceType']}/{resource['id']}",
            "resource": copy.deepcopy(resource),
        }
        if bundle_type == "transaction":
            entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


# ---------------------------------------------------------------------------------------------------------
# Offline evaluator
# ---------------------------------------------------------------------------------------------------------


@cache
def offline_settings(as_of: str) -> Settings:
    return test_settings({"CDS_AS_OF": as_of})


@cache
def _offline_service(as_of: str) -> PatientViewService:
    return PatientViewService(offline_settings(as_of), packaged_knowledge())


def decide_offline(record: Record, as_of: date) -> dict[str, Any]:
    """cds_service.offline's pipeline (bundle check, then decide) with the knowledge loaded once."""
    resources, patient_id = bundle_resources(as_bundle(record))
    return _offline_service(as_of.isoformat()).decide(resources, patient_id, as_of).to_json()


def decide_offline_cli_entry(record: Record, as_of: date) -> dict[str, Any]:
    """Exactly cds_service.offline.evaluate_bundle (reloads the knowledge file: used for a sample)."""
    return evaluate_bundle(as_bundle(record), as_of, offline_settings(as_of.isoformat()))


# ---------------------------------------------------------------------------------------------------------
# Prefetch
# ---------------------------------------------------------------------------------------------------------


def _is_dxa_group(resource: dict[str, Any]) -> bool:
    if is_dxa_value(resource):
        return True
    kind = observation_kind(resource)
    if kind and kind[0].startswith("frax"):
        return True
    return (resource.get("code") or {}).get("text") == PANEL_TEXT


def _sort_key(resource: dict[str, Any]) -> str:
    return str(
        resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") or ""
    )


def prefetch_groups(record: Record) -> dict[str, list[dict[str, Any]]]:
    """What an EHR's prefetch holds: only supplied resources, each in the key its template selects."""
    groups: dict[str, list[dict[str, Any]]] = {"dxa": [], "labs": [], **{k: [] for k in PREFETCH_TYPES}}
    for resource in record.resources:
        rtype = resource.get("resourceType")
        if rtype == "Observation":
            if _is_dxa_group(resource):
                groups["dxa"].append(resource)
            elif is_lab(resource):
                groups["labs"].append(resource)
        for key, wanted in PREFETCH_TYPES.items():
            if rtype == wanted:
                groups[key].append(resource)
    for key in ("dxa", "labs"):
        groups[key].sort(key=_sort_key, reverse=True)
    return groups


class PagingFhirServer:
    """A `responses`-mocked FHIR server over a Record: read, search (patient, code, component-code,
    combo-code, category, _id, _sort, _count), paged Bundles with `next` links, and batch Bundles."""

    def __init__(self, record: Record, token: str | None = TOKEN) -> None:
        self.resources = record.all_resources()
        self.page_size = record.page_size
        self.token = token
        self.calls: list[requests.PreparedRequest] = []
        self._pages: dict[str, list[dict[str, Any]]] = {}
        self._page_tokens = itertools.count()  # unique tokens (pages are fetched in parallel threads)

    def register(self, rsps: responses.RequestsMock) -> None:
        pattern = re.compile(re.escape(FHIR_BASE) + r"(/.*)?$")
        rsps.add_callback(responses.GET, pattern, callback=self._answer)
        rsps.add_callback(responses.POST, pattern, callback=self._batch)

    def searchset(self, matches: list[dict[str, Any]], first_page: bool = True) -> dict[str, Any]:
        """A searchset Bundle; when paging, the first page and a `next` link to the rest."""
        shown, rest = matches, []
        if self.page_size:
            shown, rest = matches[: self.page_size], matches[self.page_size :]
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [
                {
                    "fullUrl": f"{FHIR_BASE}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in shown
            ],
        }
        if rest:
            token = f"p{next(self._page_tokens)}"
            self._pages[token] = rest
            bundle["link"] = [{"relation": "next", "url": f"{FHIR_BASE}/?{urlencode({'_getpages': token})}"}]
        return bundle

    def _authorised(self, request: requests.PreparedRequest) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.calls.append(request)
        headers = {"Content-Type": FHIR_JSON}
        if not self._authorised(request):
            return 401, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        url = urlsplit(str(request.url))
        path = url.path[len(urlsplit(FHIR_BASE).path) :].strip("/")
        query = parse_qs(url.query)
        if "_getpages" in query:
            page = self._pages.pop(query["_getpages"][0], None)
            if page is None:
                return 404, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
            return 200, headers, json.dumps(self.searchset(page))
        if path == "metadata":
            return 200, headers, json.dumps({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
        status, body = self.get(path, query)
        return status, headers, json.dumps(body)

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        parts = path.split("/")
        if len(parts) == 2:
            found = [r for r in self.resources if r["resourceType"] == parts[0] and r.get("id") == parts[1]]
            if not found:
                return 404, {"resourceType": "OperationOutcome", "issue": []}
            return 200, found[0]
        return 200, self.searchset(self.search(parts[0], query))

    def search(self, rtype: str, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        matches = [r for r in self.resources if r["resourceType"] == rtype]
        if "patient" in query:
            wanted = f"Patient/{query['patient'][0]}"
            matches = [
                r for r in matches if (r.get("subject") or r.get("patient") or {}).get("reference") == wanted
            ]
        if "_id" in query:
            ids = set(query["_id"][0].split(","))
            matches = [r for r in matches if r.get("id") in ids]
        for param, where in (
            ("code", ("code",)),
            ("component-code", ("component",)),
            ("combo-code", ("code", "component")),
        ):
            if param in query:
                wanted_codes = set(query[param][0].split(","))
                matches = [r for r in matches if _codes(r, where) & wanted_codes]
        if "category" in query:
            wanted_categories = set(query["category"][0].split(","))
            matches = [r for r in matches if _categories(r) & wanted_categories]
        if query.get("_sort") == ["-date"]:
            matches.sort(key=_sort_key, reverse=True)
        return matches

    def _batch(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.calls.append(request)
        headers = {"Content-Type": FHIR_JSON}
        if not self._authorised(request):
            return 401, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        body = json.loads(request.body or b"{}")
        entries = []
        for entry in body.get("entry") or []:
            target = urlsplit(str((entry.get("request") or {}).get("url", "")))
            status, resource = self.get(target.path.strip("/"), parse_qs(target.query))
            entries.append({"resource": resource, "response": {"status": str(status)}})
        return (
            200,
            headers,
            json.dumps({"resourceType": "Bundle", "type": "batch-response", "entry": entries}),
        )


def _codes(resource: dict[str, Any], where: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    concepts = []
    if "code" in where:
        concepts.append(resource.get("code") or {})
    if "component" in where:
        concepts.extend((c or {}).get("code") or {} for c in resource.get("component") or [])
    for concept in concepts:
        for coding in concept.get("coding") or []:
            found.add(f"{coding.get('system')}|{coding.get('code')}")
            found.add(str(coding.get("code")))
    return found


def _categories(resource: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for concept in resource.get("category") or []:
        for coding in (concept or {}).get("coding") or []:
            found.add(f"{coding.get('system')}|{coding.get('code')}")
            found.add(str(coding.get("code")))
    return found


def prefetch_request(record: Record, server: PagingFhirServer) -> dict[str, Any]:
    """A patient-view request with a full prefetch (paged when the record asks) and fhirServer + token."""
    request = hook_request_for_bundle(
        as_bundle(record), with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN
    )
    patient = record.patient()
    prefetch: dict[str, Any] = {"patient": copy.deepcopy(patient)}
    for key, group in prefetch_groups(record).items():
        prefetch[key] = server.searchset(copy.deepcopy(group))
    request["prefetch"] = prefetch
    return request


@cache
def http_client(as_of: str) -> FlaskClient:
    from cds_service.app import create_app

    settings = test_settings({"CDS_AS_OF": as_of, "CDS_FHIR_ALLOWLIST": FHIR_BASE})
    return create_app(settings).test_client()


class _DecisionLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fields: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "decision", None)
        if isinstance(fields, dict):
            self.fields.append(fields)


@contextmanager
def decision_log() -> Iterator[_DecisionLog]:
    handler = _DecisionLog()
    logger = logging.getLogger("cds_service.wire.service")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@contextmanager
def plain_session() -> Iterator[None]:
    """`responses` mocks by URL, so the IP-pinning transport is replaced by a plain session (as in
    tests/test_scenarios.py); the fhirServer policy check still runs in the API layer."""
    with mock.patch("cds_service.wire.service.guarded_session", lambda *_args: requests.Session()):
        yield


@dataclass(frozen=True)
class HttpDecision:
    """What an HTTP call shows: the operator log line (outcome, rule, warnings, cards) and the decision
    object of the cards (None when the outcome has no card)."""

    logged: dict[str, Any]
    card_decision: dict[str, Any] | None
    fhir_calls: int = 0


def _decision_of(response: Any, label: str, log: _DecisionLog, calls: int) -> HttpDecision:
    assert response.status_code == 200, f"{label}: HTTP {response.status_code}: {response.get_json()}"
    cards = response.get_json()["cards"]
    decisions = [c["extension"]["osteo-cds/decision"] for c in cards]
    assert all(d == decisions[0] for d in decisions), f"{label}: cards carry different decision objects"
    assert len(log.fields) == 1, f"{label}: expected one decision log line, got {len(log.fields)}"
    return HttpDecision(log.fields[0], decisions[0] if decisions else None, calls)


def decide_via_prefetch(record: Record, as_of: date) -> HttpDecision:
    """Through the HTTP app with a full prefetch (paged when the record asks; the mocked server answers
    the `next` links and server-only references)."""
    server = PagingFhirServer(record)
    with (
        responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
        decision_log() as log,
        plain_session(),
    ):
        server.register(rsps)
        response = http_client(as_of.isoformat()).post(URL, json=prefetch_request(record, server))
    return _decision_of(response, "prefetch", log, len(server.calls))


def decide_via_mock_server(record: Record, as_of: date) -> HttpDecision:
    """Through the HTTP app without prefetch: everything is fetched from the mocked FHIR server."""
    server = PagingFhirServer(record)
    request = hook_request_for_bundle(
        as_bundle(record), with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN
    )
    with (
        responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
        decision_log() as log,
        plain_session(),
    ):
        server.register(rsps)
        response = http_client(as_of.isoformat()).post(URL, json=request)
    assert server.calls, "the record was fetched from the mocked FHIR server"
    return _decision_of(response, "mocked FHIR server", log, len(server.calls))
