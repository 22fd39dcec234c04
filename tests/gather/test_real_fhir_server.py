"""End to end against a real FHIR server process (Medplum's in-memory FHIR router behind Node):
every scenario is loaded with a transaction Bundle and the service is called WITHOUT prefetch, so it
fetches the whole record itself over HTTP on loopback."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from tests.support.app_settings import test_settings
from tests.support.fhir_server import FhirServerProcess
from tests.support.fixtures import hook_request, load_scenario_bundle, load_scenario_index
from tests.test_scenarios import URL, check_scenario, decision_from_log

pytestmark = pytest.mark.fhir_server

SCENARIOS = load_scenario_index()
TOKEN = "real-server-token-456"


@pytest.fixture(scope="module")
def loaded_server(fhir_server: FhirServerProcess) -> FhirServerProcess:
    for scenario in SCENARIOS:
        fhir_server.load(load_scenario_bundle(scenario["id"]))
    return fhir_server


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings(
        {"CDS_AS_OF": "2025-06-01", "CDS_FHIR_DEADLINE_S": "20", "CDS_FHIR_READ_TIMEOUT_S": "15"}
    )
    return create_app(settings).test_client()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
@pytest.mark.protocol(
    "R0",
    "R1",
    "R2",
    "R3",
    "R3c",
    "R4",
    "R5",
    "R6",
    "R7",
    "R7f",
    "R7h",
    "R7a",
    "R8",
    "R9a",
    "R9b",
    "R9c",
    "R10",
    "R11",
    "R12",
    "R13",
    "RENAL",
    "W-ANABOLIC_FOLLOW_ON_MISSING",
    "3b-icd-category",
    "3b-therapy-start",
    "3b-prior-denosumab",
    "4-anabolic-course",
    "6-agents",
)
def test_scenario_against_real_fhir_server(
    loaded_server: FhirServerProcess,
    client: FlaskClient,
    scenario: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    loaded_server.clear_requests()
    request = hook_request(
        scenario["id"], with_prefetch=False, fhir_server=loaded_server.base_url, access_token=TOKEN
    )
    resp = client.post(URL, json=request)
    assert resp.status_code == 200, resp.get_json()
    seen = loaded_server.requests()
    searched = {r.path.split("?")[0] for r in seen}
    assert {"/Observation", "/Condition", "/MedicationStatement", "/Patient/" + scenario["id"]} <= searched
    assert all(r.has_authorization for r in seen), "the bearer token goes with every FHIR request"
    check_scenario(scenario, resp.get_json(), decision_from_log(caplog, request["hookInstance"]))
