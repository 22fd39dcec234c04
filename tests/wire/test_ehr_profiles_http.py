"""Every shared scenario through each EHR profile, end to end against the real FHIR server process.

- **sandbox**: `dev` mode, the built-in sandbox issuer (ES384, sandbox `kid` and `jku`), no
  fhirAuthorization, some prefetch keys left out as the sandbox does when its browser fetch fails: the
  service fills them from the (open, loopback) FHIR server. Same decisions as the plain path.
- **Epic**: `required` mode, RS384 with `sub`/`nbf`, every drug named by an absolute `medicationReference`
  whose Medication is not included, OperationOutcome entries in every searchset (FHIR_PROFILE=epic). Same
  decisions as the plain path; suggestions carry RxNorm as Epic's OID and `selectionBehavior: any`.
- **Oracle Health**: `required` mode, RS256, no prefetch at all, a server whose CapabilityStatement has no
  MedicationStatement, no Medication and no `_sort`/`combo-code` on Observation, refusing such queries with
  400 (FHIR_PROFILE=oracle). The queries are shaped to the statement, so no refused query is ever sent.
  MedicationStatement is truly unavailable there: the decision is the one the reachable facts give with
  that category unknown (protocol §3a), which is never ESCALATE (see test docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.core.ehr_profile import RXNORM_OID, RXNORM_URL
from cds_service.gather.medication_fetch import missing_medication_ids
from cds_service.gather.prefetch import PREFETCH_RESOURCE_TYPES
from cds_service.knowledge.loader import load_knowledge
from cds_service.wire.auth.issuers import SANDBOX_ISSUER, SANDBOX_JKU, SANDBOX_KID
from cds_service.wire.service import PatientViewService
from tests.support.app_settings import test_settings
from tests.support.ehr_profiles import (
    EPIC_ISS,
    ORACLE_ISS,
    PUBLIC_BASE,
    SERVICE_AUD,
    SERVICE_PATH,
    client_jwt,
    epic_medication_references,
    required_mode_app,
)
from tests.support.fhir_server import FhirServerProcess, fhir_server_or_skip
from tests.support.fixtures import (
    hook_request,
    hook_request_for_bundle,
    load_scenario_bundle,
    load_scenario_index,
)
from tests.test_scenarios import check_scenario, decision_from_log
from tests.wire.test_security_support import ec_key, jwks, rsa_key

pytestmark = pytest.mark.fhir_server

SCENARIOS = load_scenario_index()
IDS = [s["id"] for s in SCENARIOS]
TOKEN = "profile-access-token-789"


def _post(client: FlaskClient, request: dict[str, Any], jwt_token: str) -> Any:
    return client.post(SERVICE_PATH, json=request, headers={"Authorization": f"Bearer {jwt_token}"})


def _suggestions(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(card["selectionBehavior"], s) for card in body["cards"] for s in card.get("suggestions", [])]


def _codings(suggestion: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        coding
        for action in suggestion["actions"]
        for coding in action["resource"]["medicationCodeableConcept"]["coding"]
    ]


# -- sandbox ----------------------------------------------------------------------------------------------

SANDBOX_KEY = ec_key(SANDBOX_KID, "ES384")


@pytest.fixture(scope="module")
def plain_server() -> Iterator[FhirServerProcess]:
    with fhir_server_or_skip("plain") as server:
        for scenario in SCENARIOS:
            server.load(load_scenario_bundle(scenario["id"]))
        yield server


@pytest.fixture(scope="module")
def sandbox_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    # The sandbox's private key is public but is not copied into this repository: the test signs with its
    # own P-384 key under the sandbox's kid, put in place of the shipped public key (same code path).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("cds_service.wire.auth.issuers.shipped_sandbox_jwks", lambda: jwks(SANDBOX_KEY))
        settings = test_settings(
            {
                "CDS_AUTH_MODE": "dev",
                "CDS_PUBLIC_BASE_URL": PUBLIC_BASE,
                "CDS_DATA_DIR": str(tmp_path_factory.mktemp("sandbox")),
                "CDS_AS_OF": "2025-06-01",
                "CDS_FHIR_DEADLINE_S": "20",
                "CDS_FHIR_READ_TIMEOUT_S": "15",
            }
        )
        yield create_app(settings).test_client()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_sandbox_profile_gives_the_plain_decisions(
    plain_server: FhirServerProcess,
    sandbox_client: FlaskClient,
    scenario: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    request = hook_request(scenario["id"], with_prefetch=True, fhir_server=plain_server.base_url)
    for failed_in_the_browser in ("dxa", "medicationRequests"):
        del request["prefetch"][failed_in_the_browser]
    token = client_jwt(SANDBOX_KEY, SANDBOX_ISSUER, SERVICE_AUD, jku=SANDBOX_JKU)
    response = _post(sandbox_client, request, token)
    assert response.status_code == 200, response.get_json()
    logged = decision_from_log(caplog, request["hookInstance"])
    check_scenario(scenario, response.get_json(), logged)
    assert logged["profile"] == "sandbox"
    for behavior, suggestion in _suggestions(response.get_json()):
        assert behavior == "at-most-one"
        assert {coding["system"] for coding in _codings(suggestion)} == {RXNORM_URL}


# -- Epic -------------------------------------------------------------------------------------------------

EPIC_KEY = rsa_key("d3bmo5HzW61TUgikHZH+A8Tx4UOXz2iOs4KvVU4eLY0=", "RS384")


@pytest.fixture(scope="module")
def epic_server() -> Iterator[FhirServerProcess]:
    with fhir_server_or_skip("epic") as server:
        for scenario in SCENARIOS:
            server.load(epic_medication_references(load_scenario_bundle(scenario["id"])))
        yield server


@pytest.fixture(scope="module")
def epic_client(epic_server: FhirServerProcess, tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    issuer = {"iss": EPIC_ISS, "fhir_servers": [epic_server.base_url], "profile": {"vendor": "epic"}}
    return required_mode_app(tmp_path_factory.mktemp("epic"), EPIC_KEY, issuer)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_epic_profile_gives_the_plain_decisions(
    epic_server: FhirServerProcess,
    epic_client: FlaskClient,
    scenario: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    epic_server.clear_requests()
    bundle = epic_medication_references(load_scenario_bundle(scenario["id"]))
    request = hook_request_for_bundle(
        bundle, with_prefetch=False, fhir_server=epic_server.base_url, access_token=TOKEN
    )
    response = _post(epic_client, request, client_jwt(EPIC_KEY, EPIC_ISS, SERVICE_AUD))
    assert response.status_code == 200, response.get_json()
    check_scenario(scenario, response.get_json(), decision_from_log(caplog, request["hookInstance"]))
    for behavior, suggestion in _suggestions(response.get_json()):
        assert behavior == "any"
        assert {coding["system"] for coding in _codings(suggestion)} == {RXNORM_OID}
    # The referenced Medications (absolute URLs on fhirServer) were fetched in one batched search.
    resources = [entry["resource"] for entry in bundle["entry"]]
    wanted = missing_medication_ids(
        [r for r in resources if r["resourceType"] != "Medication"], epic_server.base_url
    )
    batched = [r.path for r in epic_server.requests() if r.path.startswith(("/Medication?", "/Medication/"))]
    assert bool(batched) == bool(wanted)
    assert all(path.startswith("/Medication?_id=") for path in batched)


# -- Oracle Health ----------------------------------------------------------------------------------------

ORACLE_KEY = rsa_key("oracle-rs256", "RS256")
KNOWLEDGE = load_knowledge()
_REACHABLE_TYPES = set(PREFETCH_RESOURCE_TYPES.values()) - {"MedicationStatement"}


@pytest.fixture(scope="module")
def oracle_server() -> Iterator[FhirServerProcess]:
    with fhir_server_or_skip("oracle") as server:
        for scenario in SCENARIOS:
            server.load(load_scenario_bundle(scenario["id"]))
        yield server


@pytest.fixture(scope="module")
def oracle_client(oracle_server: FhirServerProcess, tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    issuer = {"iss": ORACLE_ISS, "fhir_servers": [oracle_server.base_url], "profile": {"vendor": "oracle"}}
    return required_mode_app(tmp_path_factory.mktemp("oracle"), ORACLE_KEY, issuer)


def _as_served(value: Any) -> Any:
    """JSON as the Node server sends it back: a whole float is an integer there (-3.0 -> -3)."""
    if isinstance(value, dict):
        return {key: _as_served(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_served(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _reachable_decision(scenario_id: str, as_of: str) -> dict[str, Any]:
    """The engine's decision on what an Oracle-like server can serve, MedicationStatement unknown."""
    bundle = _as_served(load_scenario_bundle(scenario_id))
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] in _REACHABLE_TYPES]
    service = PatientViewService(test_settings({"CDS_AS_OF": as_of}), KNOWLEDGE)
    decision = service.decide(resources, scenario_id, service.as_of(), ["medicationStatements"])
    return decision.to_json()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_oracle_profile_decides_on_the_reachable_facts_and_never_escalates_on_a_gap(
    oracle_server: FhirServerProcess,
    oracle_client: FlaskClient,
    scenario: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MedicationStatement is not served, so its facts are truly unavailable: the category is unknown
    (§3a), which caps ESCALATE at CONSIDER and turns "no first-line drug found" into INSUFFICIENT_DATA.
    Everything else the server can give (Observations without `_sort`/`combo-code`, MedicationRequest,
    Administration, Dispense, Conditions...) gives exactly the decision the engine makes on those facts."""
    caplog.set_level(logging.INFO)
    oracle_server.clear_requests()
    request = hook_request(
        scenario["id"], with_prefetch=False, fhir_server=oracle_server.base_url, access_token=TOKEN
    )
    response = _post(oracle_client, request, client_jwt(ORACLE_KEY, ORACLE_ISS, SERVICE_AUD))
    assert response.status_code == 200, response.get_json()
    logged = decision_from_log(caplog, request["hookInstance"])
    expected = _reachable_decision(scenario["id"], scenario["as_of"])
    assert logged["outcome"] == expected["outcome"]
    assert sorted(logged["warnings"]) == sorted(expected["warnings"])
    for card in response.get_json()["cards"]:
        assert card["extension"]["osteo-cds/decision"] == expected
    assert logged["outcome"] != "ESCALATE"
    assert "medicationStatements" in logged["unavailable"]
    if logged["outcome"] != scenario["expect"]["outcome"]:
        # Only the gap may change the outcome, and only toward caution.
        assert {"unavailable_data", "medication_history"} & set(expected["missing"]), expected
    seen = oracle_server.requests()
    assert not any(r.path.startswith(("/MedicationStatement", "/Medication?", "/Medication/")) for r in seen)
    assert not any("_sort" in r.path or "combo-code" in r.path for r in seen)
    assert all(r.has_authorization for r in seen)
