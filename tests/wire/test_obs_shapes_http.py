"""Real-world observation shapes through the HTTP app (protocol §3c): via prefetch, via the mocked FHIR
server, and (marker fhir_server) via the real Medplum FHIR server, which must find DXA panels whose
values are only in components."""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.gather.prefetch import substitute
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.wire.service import build_service
from tests.support.app_settings import test_settings
from tests.support.fhir_server import FhirServerProcess
from tests.support.fixtures import hook_request_for_bundle, load_scenario_bundle
from tests.support.mock_fhir import MockFhirServer
from tests.support.real_world_shapes import as_dxa_panels, renamed, with_transcribed_copies
from tests.test_scenarios import FHIR_BASE, TOKEN, URL, decision_from_log

AS_OF = "2025-06-01"
Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings(
        {
            "CDS_AS_OF": AS_OF,
            "CDS_FHIR_ALLOWLIST": FHIR_BASE,
            "CDS_FHIR_DEADLINE_S": "20",
            "CDS_FHIR_READ_TIMEOUT_S": "15",
        }
    )
    return create_app(settings).test_client()


def _observations(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]


def _code(resource: dict[str, Any]) -> str:
    return str(resource["code"]["coding"][0]["code"])


def egfr_as(value: dict[str, Any]) -> Mutation:
    def mutate(bundle: dict[str, Any]) -> None:
        for observation in _observations(bundle):
            if _code(observation) == "33914-3":
                observation.pop("valueQuantity")
                observation.update(copy.deepcopy(value))

    return mutate


def first_dxa(**changes: Any) -> Mutation:
    def mutate(bundle: dict[str, Any]) -> None:
        observation = next(o for o in _observations(bundle) if _code(o) == "38264-8")
        observation.update(copy.deepcopy(changes))

    return mutate


def all_statements(period: dict[str, str]) -> Mutation:
    def mutate(bundle: dict[str, Any]) -> None:
        for entry in bundle["entry"]:
            if entry["resource"]["resourceType"] == "MedicationStatement":
                entry["resource"].pop("effectiveDateTime", None)
                entry["resource"]["effectivePeriod"] = dict(period)

    return mutate


def s01_with(mutate: Mutation) -> dict[str, Any]:
    bundle = load_scenario_bundle("s01")
    mutate(bundle)
    return bundle


def call_with_prefetch(
    client: FlaskClient, bundle: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], dict[str, Any]]:
    caplog.set_level(logging.INFO)
    request = hook_request_for_bundle(bundle, with_prefetch=True, fhir_server=None, access_token=None)
    request["hookInstance"] = str(uuid.uuid4())  # several calls per patient in one test
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        resp = client.post(URL, json=request)
        assert len(rsps.calls) == 0
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json(), decision_from_log(caplog, request["hookInstance"])


def call_via_mock_server(
    client: FlaskClient,
    bundle: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    monkeypatch.setattr("cds_service.wire.service.guarded_session", lambda *_args: requests.Session())
    caplog.set_level(logging.INFO)
    request = hook_request_for_bundle(bundle, with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN)
    request["hookInstance"] = str(uuid.uuid4())  # several calls per patient in one test
    server = MockFhirServer(FHIR_BASE, bundle, TOKEN)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        resp = client.post(URL, json=request)
    assert resp.status_code == 200, resp.get_json()
    assert server.calls
    return decision_from_log(caplog, request["hookInstance"])


def decision_of(body: dict[str, Any]) -> dict[str, Any]:
    decision: dict[str, Any] = body["cards"][0]["extension"]["osteo-cds/decision"]
    return decision


# ----- comparators ------------------------------------------------------------------------------------
RENAL_SHAPES = {
    "string <15": egfr_as({"valueString": "<15"}),
    "string with unit": egfr_as({"valueString": "< 15 mL/min/1.73m2"}),
    "comparator": egfr_as({"valueQuantity": {"value": 15, "comparator": "<", "unit": "mL/min/1.73m2"}}),
}


@pytest.mark.protocol("3c-comparators", "RENAL")
@pytest.mark.parametrize("shape", list(RENAL_SHAPES))
def test_egfr_below_15_reaches_the_renal_gate_via_prefetch(
    client: FlaskClient, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    body, logged = call_with_prefetch(client, s01_with(RENAL_SHAPES[shape]), caplog)
    assert (logged["outcome"], logged["rule"]) == ("SPECIALIST_REVIEW", "renal")
    decision = decision_of(body)
    assert "egfr" not in decision["missing"]
    assert not any(card.get("suggestions") for card in body["cards"]), "no draft anabolic orders"


@pytest.mark.protocol("3c-comparators", "RENAL")
def test_egfr_string_via_the_mocked_fhir_server(
    client: FlaskClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = call_via_mock_server(client, s01_with(egfr_as({"valueString": "<15"})), caplog, monkeypatch)
    assert (logged["outcome"], logged["rule"]) == ("SPECIALIST_REVIEW", "renal")


@pytest.mark.protocol("3c-comparators", "3a-cap")
def test_unreadable_egfr_is_reported_on_the_card(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body, logged = call_with_prefetch(client, s01_with(egfr_as({"valueString": "see comment"})), caplog)
    assert logged["outcome"] == "CONSIDER"
    decision = decision_of(body)
    assert "egfr" in decision["missing"]
    assert "eGFR reported as 'see comment': not readable" in decision["caveats"]


# ----- implausible values and dates: never a 5xx -------------------------------------------------------
CRASH_SHAPES = {
    "t-score 1e30": first_dxa(valueQuantity={"value": 1e30, "unit": "{T-score}"}),
    "dxa dated 9999-12-31": first_dxa(effectiveDateTime="9999-12-31"),
    "dxa dated 0001-01-01": first_dxa(effectiveDateTime="0001-01-01"),
    "statement period end sentinel": all_statements({"start": "2021-03-01", "end": "9999-12-31"}),
    "statement period start 0001": all_statements({"start": "0001-01-01"}),
    "statement period start 9999": all_statements({"start": "9999-12-31T23:59:59Z"}),
}


@pytest.mark.protocol("3c-implausible", "3b-dates")
@pytest.mark.parametrize("shape", list(CRASH_SHAPES))
def test_implausible_input_is_never_a_5xx(
    client: FlaskClient, shape: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, logged = call_with_prefetch(client, s01_with(CRASH_SHAPES[shape]), caplog)
    assert logged["outcome"] != "ESCALATE" or shape == "statement period end sentinel"
    if shape != "statement period end sentinel":
        assert any("implausible" in c for c in decision_of(body)["caveats"]), decision_of(body)["caveats"]
    assert (
        call_via_mock_server(client, s01_with(CRASH_SHAPES[shape]), caplog, monkeypatch)["outcome"]
        == (logged["outcome"])
    )


@pytest.mark.protocol("3c-implausible", "3b-dates")
def test_sentinel_period_end_is_open(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """An active statement ending 9999-12-31 is the same as one without an end."""
    _, open_end = call_with_prefetch(client, s01_with(all_statements({"start": "2021-03-01"})), caplog)
    _, sentinel = call_with_prefetch(
        client, s01_with(all_statements({"start": "2021-03-01", "end": "9999-12-31"})), caplog
    )
    assert sentinel["outcome"] == open_end["outcome"] == "ESCALATE"


# ----- panels and duplicates --------------------------------------------------------------------------
@pytest.mark.protocol("3c-panels", "3c-duplicates", "5-dxa")
@pytest.mark.parametrize("shape", ["panels", "transcribed"])
def test_panels_and_duplicates_via_prefetch_and_mocked_server(
    client: FlaskClient, shape: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = load_scenario_bundle("s01")
    reshaped = (
        as_dxa_panels(plain) if shape == "panels" else with_transcribed_copies(plain, "Transcribed DXA")
    )
    plain_body, _ = call_with_prefetch(client, plain, caplog)
    body, logged = call_with_prefetch(client, reshaped, caplog)
    assert logged["outcome"] == "ESCALATE"
    assert decision_of(body) == decision_of(plain_body)
    assert call_via_mock_server(client, reshaped, caplog, monkeypatch)["outcome"] == "ESCALATE"


@pytest.mark.fhir_server
@pytest.mark.protocol("3c-panels", "5-dxa")
def test_panels_are_found_on_the_real_fhir_server(
    fhir_server: FhirServerProcess, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = renamed(as_dxa_panels(load_scenario_bundle("s01")), "s01", "s01panel")
    fhir_server.load(bundle)
    template = build_service(test_settings({"CDS_AS_OF": AS_OF})).templates["dxa"]
    assert "combo-code=" in template
    found = fhir_server.get(substitute(template, "s01panel"))
    panels = [e["resource"]["id"] for e in found.get("entry", [])]
    assert len(panels) == 2, "the DXA query finds both panels (values only in components)"
    assert all("-panel-" in panel for panel in panels)
    assert packaged_knowledge().dxa_codes()
    caplog.set_level(logging.INFO)
    request = hook_request_for_bundle(
        bundle, with_prefetch=False, fhir_server=fhir_server.base_url, access_token=TOKEN
    )
    resp = client.post(URL, json=request)
    assert resp.status_code == 200, resp.get_json()
    logged = decision_from_log(caplog, request["hookInstance"])
    assert logged["outcome"] == "ESCALATE"
    plain_body, _ = call_with_prefetch(client, load_scenario_bundle("s01"), caplog)
    assert decision_of(resp.get_json()) == decision_of(plain_body)


@pytest.mark.protocol("3c-comparators")
def test_unreadable_text_is_escaped_on_the_card(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    body, _ = call_with_prefetch(
        client, s01_with(egfr_as({"valueString": "<b>see</b> [x](http://e.org)"})), caplog
    )
    detail = body["cards"][0]["detail"]
    assert "not readable" in detail
    assert "&lt;b>see&lt;/b>" in detail  # escaped where a tag could open, nowhere else
    assert "<b>" not in detail and "</b>" not in detail
    assert "[x](http://e.org)" not in detail
