"""The closed code gaps through the real HTTP app, with prefetch and via a mocked FHIR server.

Scenario s01 (ESCALATE, romosozumab preferred) plus one Condition or Procedure each: the added code
must change the decision the way the protocol says (pattern of tests/test_scenarios.py).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
import requests
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.knowledge.schema import ICD10CM, SNOMED
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request_for_bundle, load_scenario_bundle
from tests.support.mock_fhir import MockFhirServer
from tests.test_scenarios import decision_from_log

FHIR_BASE = "https://fhir.example.org/r4"
TOKEN = "codes-access-token-456"
URL = "/cds-services/osteoporosis-escalation"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings({"CDS_AS_OF": "2025-06-01", "CDS_FHIR_ALLOWLIST": FHIR_BASE})
    return create_app(settings).test_client()


def _bundle_with(resources: list[dict[str, Any]]) -> dict[str, Any]:
    bundle = copy.deepcopy(load_scenario_bundle("s01"))
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    for resource in resources:
        added = {**resource, "subject": {"reference": f"Patient/{patient['id']}"}}
        url = f"{FHIR_BASE}/{added['resourceType']}/{added['id']}"
        bundle["entry"].append({"fullUrl": url, "resource": added})
    return bundle


def _condition(system: str, code: str, rid: str = "added-condition", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "code": {"coding": [{"system": system, "code": code}]},
        **extra,
    }


def _procedure(system: str, code: str, performed: str) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": "added-procedure",
        "status": "completed",
        "code": {"coding": [{"system": system, "code": code}]},
        "performedDateTime": performed,
    }


CASES = [
    # (id, resources, outcome, romosozumab status or None)
    ("old-mi", [_condition(ICD10CM, "I25.2", recordedDate="2025-05-20")], "ESCALATE", "caution"),
    ("stroke-history", [_condition(ICD10CM, "Z86.73")], "ESCALATE", "caution"),
    ("tia", [_condition(ICD10CM, "G45.9", onsetDateTime="2023-01-10")], "ESCALATE", "caution"),
    (
        "osteoporotic-pelvis",
        [_condition(ICD10CM, "M80.0B1A", onsetDateTime="2024-08-01")],
        "VERY_HIGH_RISK_PATHWAY",
        None,
    ),
    ("ankle", [_condition(ICD10CM, "S82.51XA", onsetDateTime="2024-08-01")], "VERY_HIGH_RISK_PATHWAY", None),
    (
        "undated-vertebral-levels",
        [
            _condition(ICD10CM, "M80.08XA", rid="v1", bodySite=[{"text": "L1"}]),
            _condition(ICD10CM, "M80.08XA", rid="v2", bodySite=[{"text": "T12"}]),
        ],
        "VERY_HIGH_RISK_PATHWAY",
        None,
    ),
    ("hypocalcaemia", [_condition(ICD10CM, "E83.51")], "CONSIDER", "excluded"),
    ("hypercalcaemia", [_condition(ICD10CM, "E83.52")], "SPECIALIST_REVIEW", None),
    ("renal-hpt", [_condition(ICD10CM, "N25.81")], "SPECIALIST_REVIEW", None),
    ("kidney-transplant", [_procedure(SNOMED, "70536003", "2010-02-01")], "SPECIALIST_REVIEW", None),
]


def _check(body: dict[str, Any], logged: dict[str, Any], outcome: str, romosozumab: str | None) -> None:
    assert logged["outcome"] == outcome, logged
    decisions = [c["extension"]["osteo-cds/decision"] for c in body["cards"]]
    assert decisions and all(d == decisions[0] for d in decisions)
    assert decisions[0]["outcome"] == outcome
    if romosozumab is not None:
        statuses = {a["agent"]: a["status"] for a in decisions[0]["agents"]}
        assert statuses["romosozumab"] == romosozumab, decisions[0]["agents"]


@pytest.mark.protocol("R4", "R9a", "R9c", "RENAL", "6-agents", "3b-cv-undated", "3b-fractures")
@pytest.mark.parametrize(("case", "resources", "outcome", "romosozumab"), CASES, ids=[c[0] for c in CASES])
def test_codes_with_prefetch(
    *,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    case: str,
    resources: list[dict[str, Any]],
    outcome: str,
    romosozumab: str | None,
) -> None:
    caplog.set_level(logging.INFO)
    assert case
    bundle = _bundle_with(copy.deepcopy(resources))
    request = hook_request_for_bundle(bundle, with_prefetch=True, fhir_server=None, access_token=None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        resp = client.post(URL, json=request)
        assert len(rsps.calls) == 0, "a complete prefetch needs no FHIR call"
    assert resp.status_code == 200, resp.get_json()
    _check(resp.get_json(), decision_from_log(caplog, request["hookInstance"]), outcome, romosozumab)


@pytest.mark.protocol("R4", "R9a", "R9c", "RENAL", "6-agents", "3b-cv-undated", "3b-fractures")
@pytest.mark.parametrize(("case", "resources", "outcome", "romosozumab"), CASES, ids=[c[0] for c in CASES])
def test_codes_via_fhir_server(
    *,
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    resources: list[dict[str, Any]],
    outcome: str,
    romosozumab: str | None,
) -> None:
    assert case
    resp, request = post_via_fhir_server(client, caplog, monkeypatch, copy.deepcopy(resources))
    _check(resp.get_json(), decision_from_log(caplog, request["hookInstance"]), outcome, romosozumab)


def post_via_fhir_server(
    client: FlaskClient,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    resources: list[dict[str, Any]],
) -> tuple[Any, dict[str, Any]]:
    """The hook call without prefetch: the record (base bundle + `resources`) comes from a mocked FHIR
    server; asserts a 200 and that the server was read. Returns the response and the request."""
    monkeypatch.setattr("cds_service.wire.service.guarded_session", lambda *_args: requests.Session())
    caplog.set_level(logging.INFO)
    bundle = _bundle_with(resources)
    request = hook_request_for_bundle(bundle, with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN)
    server = MockFhirServer(FHIR_BASE, bundle, TOKEN)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        resp = client.post(URL, json=request)
    assert resp.status_code == 200, resp.get_json()
    assert server.calls, "the record was fetched from the FHIR server"
    return resp, request
