"""An institution's knowledge file through the real HTTP app (CDS_KNOWLEDGE_FILE): the changed values reach
the cards on both data paths (prefetch and the mocked FHIR server), and a key nothing reads stops start-up.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.knowledge.schema import KnowledgeError
from tests.knowledge_variants import PACKAGED_DATA, write_variant
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request, load_scenario_bundle
from tests.support.mock_fhir import MockFhirServer

FHIR_BASE = "https://fhir.example.org/r4"
TOKEN = "knowledge-access-token-123"
URL = "/cds-services/osteoporosis-escalation"
TITLE = "Osteoporosis escalation (institution copy)"


def _institution_copy(data: dict[str, Any]) -> None:
    data["windows"]["lab_lookback_months"] = 2  # s01's labs are older: egfr, calcium, ALP missing
    data["title"] = TITLE


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    settings = test_settings(
        {
            "CDS_AS_OF": "2025-06-01",
            "CDS_FHIR_ALLOWLIST": FHIR_BASE,
            "CDS_KNOWLEDGE_FILE": str(write_variant(_institution_copy)),
        }
    )
    return create_app(settings).test_client()


def _check_lab_window_card(body: dict[str, Any]) -> None:
    (card,) = body["cards"]
    decision = card["extension"]["osteo-cds/decision"]
    assert decision["outcome"] == "CONSIDER"  # s01 escalates with the packaged 12-month look-back
    assert {"egfr", "calcium", "alkaline_phosphatase"} <= set(decision["missing"])
    assert "25-OH vitamin D not on record within 2 months" in decision["caveats"]
    missing = next(p for p in card["detail"].split("\n\n") if p.startswith("Missing:"))
    assert "No eGFR in the last 2 months." in missing
    assert "12 months" not in missing


@pytest.mark.protocol("3b-labs", "3a-cap")
def test_configured_lab_look_back_reaches_the_card_with_prefetch(client: FlaskClient) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        resp = client.post(URL, json=hook_request("s01", with_prefetch=True))
        assert len(rsps.calls) == 0
    assert resp.status_code == 200, resp.get_json()
    _check_lab_window_card(resp.get_json())


@pytest.mark.protocol("3b-labs", "3a-cap")
def test_configured_lab_look_back_reaches_the_card_via_fhir_server(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cds_service.wire.service.guarded_session", lambda *_args: requests.Session())
    request = hook_request("s01", with_prefetch=False, fhir_server=FHIR_BASE, access_token=TOKEN)
    server = MockFhirServer(FHIR_BASE, load_scenario_bundle("s01"), TOKEN)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        resp = client.post(URL, json=request)
    assert resp.status_code == 200, resp.get_json()
    assert server.calls
    _check_lab_window_card(resp.get_json())


def test_discovery_title_is_the_knowledge_file_title(client: FlaskClient) -> None:
    (service,) = client.get("/cds-services").get_json()["services"]
    assert service["title"] == TITLE
    assert PACKAGED_DATA["title"] != TITLE


def test_key_nothing_reads_stops_start_up() -> None:
    def typo(data: dict[str, Any]) -> None:
        data["windows"]["lab_lookback_month"] = 6

    settings = test_settings({"CDS_KNOWLEDGE_FILE": str(write_variant(typo))})
    with pytest.raises(KnowledgeError, match=r"'lab_lookback_month'.*nearest valid: 'lab_lookback_months'"):
        create_app(settings)
