"""Medication shapes (§3c) through the real HTTP app: via prefetch and via the mocked FHIR server.

The batched Medication fetch for unresolved `medicationReference`s: exactly one extra request
(`Medication?_id=a,b,c`), with the bearer token, only to fhirServer; its failure falls back to the display
(else unreadable) and never fails the call.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request_for_bundle, load_scenario_bundle
from tests.support.medication_shapes import (
    as_reference,
    decide,
    medication,
    resources_of,
    statement,
    without,
)
from tests.support.mock_fhir import MockFhirServer

FHIR_BASE = "https://fhir.example.org/r4"
TOKEN = "medication-shapes-token-456"
URL = "/cds-services/osteoporosis-escalation"


class MedicationAwareServer(MockFhirServer):
    """The shared mock plus `Medication?_id=a,b,c`; `fail_medications` answers that search with 500."""

    def __init__(self, bundle: dict[str, Any], *, fail_medications: bool = False) -> None:
        super().__init__(FHIR_BASE, bundle, TOKEN)
        self.fail_medications = fail_medications

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        url = urlsplit(str(request.url))
        if not url.path.endswith("/Medication"):
            return super()._answer(request)
        self.calls.append(request)
        headers = {"Content-Type": "application/fhir+json"}
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        if self.fail_medications:
            return 500, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        ids = set(parse_qs(url.query)["_id"][0].split(","))
        found = [r for r in self.resources if r["resourceType"] == "Medication" and r["id"] in ids]
        entries = [{"fullUrl": f"{FHIR_BASE}/Medication/{r['id']}", "resource": r} for r in found]
        return 200, headers, json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": entries})


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings({"CDS_AS_OF": "2025-06-01", "CDS_FHIR_ALLOWLIST": FHIR_BASE})
    return create_app(settings).test_client()


@pytest.fixture(autouse=True)
def _plain_session(monkeypatch: pytest.MonkeyPatch) -> None:
    # `responses` mocks the server by URL (as in test_scenarios): the IP-pinning transport is replaced.
    monkeypatch.setattr("cds_service.wire.service.guarded_session", lambda *_args: requests.Session())


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def _decision(body: dict[str, Any]) -> dict[str, Any]:
    decisions = [card["extension"]["osteo-cds/decision"] for card in body["cards"]]
    assert decisions and all(d == decisions[0] for d in decisions)
    return decisions[0]


def _s12_by_reference(reference_of: Any, display: str | None) -> list[dict[str, Any]]:
    """s12 with each denosumab administration naming its drug by reference; Medications added."""
    out: list[dict[str, Any]] = []
    for r in resources_of("s12"):
        if r["resourceType"] == "MedicationAdministration":
            mid = "den-" + r["id"].rsplit("-", 1)[1]
            out.append(as_reference(r, reference_of(mid), display))
            out.append(medication(mid, r["medicationCodeableConcept"]))
        else:
            out.append(r)
    return out


def _post(client: FlaskClient, bundle: dict[str, Any], **request_args: Any) -> tuple[int, dict[str, Any]]:
    request = hook_request_for_bundle(bundle, **request_args)
    resp = client.post(URL, json=request)
    return resp.status_code, resp.get_json()


@pytest.mark.protocol("3c-medication-reference")
@pytest.mark.parametrize("absolute", [False, True])
def test_fhir_server_path_fetches_referenced_medications_in_one_batched_request(
    client: FlaskClient, absolute: bool
) -> None:
    resources = _s12_by_reference(
        (lambda mid: f"{FHIR_BASE}/Medication/{mid}") if absolute else (lambda mid: f"Medication/{mid}"), None
    )
    server = MedicationAwareServer(_bundle(resources))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        status, body = _post(
            client, _bundle(resources), with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN
        )
        total = len(rsps.calls)
    assert status == 200, body
    medication_calls = [c for c in server.calls if urlsplit(str(c.url)).path.endswith("/Medication")]
    assert len(medication_calls) == 1, "exactly one extra, batched request"
    ids = parse_qs(urlsplit(str(medication_calls[0].url)).query)["_id"][0].split(",")
    assert sorted(ids) == sorted(f"den-{n}" for n in range(1, 10))
    assert medication_calls[0].headers.get("Authorization") == f"Bearer {TOKEN}"
    assert total == len(server.calls), "no request went anywhere but the FHIR server"
    assert _decision(body) == decide(resources_of("s12"))


@pytest.mark.protocol("3c-medication-reference")
def test_prefetch_path_with_fhir_server_fetches_only_the_missing_medications(client: FlaskClient) -> None:
    resources = _s12_by_reference(lambda mid: f"Medication/{mid}", None)
    server = MedicationAwareServer(_bundle(resources))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        status, body = _post(
            client, _bundle(resources), with_prefetch=True, fhir_server=FHIR_BASE, access_token=TOKEN
        )
    assert status == 200, body
    paths = [urlsplit(str(c.url)).path for c in server.calls]
    assert [p for p in paths if not p.endswith("/metadata")] == [urlsplit(FHIR_BASE).path + "/Medication"]
    assert _decision(body) == decide(resources_of("s12"))


@pytest.mark.protocol("3c-medication-reference")
def test_prefetch_with_supplied_medications_needs_no_fetch(client: FlaskClient) -> None:
    resources = _s12_by_reference(lambda mid: f"Medication/{mid}", None)
    bundle = _bundle(resources)
    request = hook_request_for_bundle(bundle, with_prefetch=True, fhir_server=FHIR_BASE, access_token=TOKEN)
    medications = [r for r in resources if r["resourceType"] == "Medication"]
    administrations = request["prefetch"]["medicationAdministrations"]
    administrations["entry"].extend({"resource": copy.deepcopy(m)} for m in medications)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        resp = client.post(URL, json=request)
        assert len(rsps.calls) == 0
    assert resp.status_code == 200
    assert _decision(resp.get_json()) == decide(resources_of("s12"))


@pytest.mark.protocol("3c-medication-reference", "3a-caveat")
def test_prefetch_without_fhir_server_uses_the_display(client: FlaskClient) -> None:
    resources = [
        r
        for r in _s12_by_reference(
            lambda mid: f"https://ehr.example.org/api/FHIR/R4/Medication/{mid}", "PROLIA 60 MG/ML SC SOSY"
        )
        if r["resourceType"] != "Medication"
    ]
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        status, body = _post(
            client, _bundle(resources), with_prefetch=True, fhir_server=None, access_token=None
        )
        assert len(rsps.calls) == 0
    assert status == 200, body
    decision = _decision(body)
    assert without(decision, "caveats") == without(decide(resources_of("s12")), "caveats")
    assert "medication identified by name" in decision["caveats"]


@pytest.mark.protocol("3c-medication-reference", "3a-caveat", "3a-cap")
@pytest.mark.parametrize(("display", "unreadable"), [("PROLIA 60 MG/ML SC SOSY", False), (None, True)])
def test_failed_medication_fetch_falls_back_to_display_else_unreadable(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, display: str | None, unreadable: bool
) -> None:
    caplog.set_level(logging.INFO)
    resources = _s12_by_reference(lambda mid: f"Medication/{mid}", display)
    server = MedicationAwareServer(_bundle(resources), fail_medications=True)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        status, body = _post(
            client, _bundle(resources), with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN
        )
    assert status == 200, body
    decision = _decision(body)
    assert ("unreadable_resources" in decision["missing"]) is unreadable
    if unreadable:
        assert (decision["outcome"], decision["rule"]) == ("INSUFFICIENT_DATA", "R6")
        assert "medication_history" in decision["missing"]
        assert "9 medication (unresolved reference) entries could not be read" in decision["caveats"]
    else:
        assert without(decision, "caveats") == without(decide(resources_of("s12")), "caveats")
    assert any("referenced Medication fetch failed" in r.getMessage() for r in caplog.records)


@pytest.mark.protocol("3c-medication-reference")
def test_reference_to_another_server_is_not_fetched(client: FlaskClient) -> None:
    resources = [
        r
        for r in _s12_by_reference(
            lambda mid: f"https://other.example.net/fhir/Medication/{mid}", "denosumab 60 mg/mL"
        )
        if r["resourceType"] != "Medication"
    ]
    server = MedicationAwareServer(_bundle(resources))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        status, body = _post(
            client, _bundle(resources), with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN
        )
    assert status == 200, body
    assert not [c for c in server.calls if urlsplit(str(c.url)).path.endswith("/Medication")]
    assert "medication identified by name" in _decision(body)["caveats"]


@pytest.mark.protocol("3c-statement-doses", "W-DENOSUMAB_OVERDUE")
@pytest.mark.parametrize("with_prefetch", [True, False])
def test_denosumab_statements_raise_the_overdue_warning_over_http(with_prefetch: bool) -> None:
    base = load_scenario_bundle("s12")
    resources = [
        statement(r["id"], r["subject"], r["medicationCodeableConcept"], day=r["effectiveDateTime"])
        if r["resourceType"] == "MedicationAdministration"
        else copy.deepcopy(r)
        for r in (e["resource"] for e in base["entry"])
    ]
    settings = test_settings({"CDS_AS_OF": "2025-09-01", "CDS_FHIR_ALLOWLIST": FHIR_BASE})
    app_client = create_app(settings).test_client()
    server = MedicationAwareServer(_bundle(resources))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        args: dict[str, Any] = (
            {"with_prefetch": True, "fhir_server": None, "access_token": None}
            if with_prefetch
            else {"with_prefetch": False, "fhir_server": FHIR_BASE, "access_token": TOKEN}
        )
        status, body = _post(app_client, _bundle(resources), **args)
    assert status == 200, body
    assert "DENOSUMAB_OVERDUE" in _decision(body)["warnings"]
    assert any(card["indicator"] == "critical" for card in body["cards"])
