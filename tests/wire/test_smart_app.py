"""The SMART app without a browser: the card link, the sealed session cookie and the refusal pages.
(The allowlists and discovery: tests/gather/test_smart_oauth.py; the full EHR launch in Chromium:
test_smart_app_browser.py.)"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.present.smart_link import LINKED_OUTCOMES, parse_app_context
from cds_service.wire.smart_session import AppSession, PendingLaunch, SessionCodec
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

URL = "/cds-services/osteoporosis-escalation"
ISS = "http://127.0.0.1:8123/fhir"


def _client(**extra: str) -> FlaskClient:
    env = {"CDS_AS_OF": "2025-06-01", "CDS_SMART_CLIENT_ID": "osteo-app", "CDS_SMART_ISS_ALLOWLIST": ISS}
    env.update(extra)
    return create_app(test_settings(env)).test_client()


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    return _client(CDS_PUBLIC_BASE_URL="https://cds.example.org")


@pytest.mark.parametrize(
    ("scenario", "outcome"),
    [("s01", "ESCALATE"), ("s20", "CONSIDER"), ("s25", "SPECIALIST_REVIEW"), ("s02", "RESPONSE_MET")],
)
def test_the_outcome_card_links_the_app_only_for_the_three_outcomes(
    client: FlaskClient, scenario: str, outcome: str
) -> None:
    response = client.post(URL, json=hook_request(scenario, with_prefetch=True))
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    # the sources are `absolute` links on the first card; the app is the one `smart` link
    links = [link for card in cards for link in card.get("links", []) if link["type"] == "smart"]
    if outcome not in LINKED_OUTCOMES:
        assert links == []
        return
    assert links == [
        {
            "label": links[0]["label"],
            "url": "https://cds.example.org/smart/launch",
            "type": "smart",
            "appContext": links[0]["appContext"],
        }
    ]
    decision_id, patient = parse_app_context(links[0]["appContext"])
    assert decision_id == cards[0]["uuid"]
    assert patient == hook_request(scenario, with_prefetch=True)["context"]["patientId"]
    assert cards[0]["extension"]["osteo-cds/decision"]["outcome"] == outcome


def test_without_a_client_id_cards_have_no_smart_link_and_no_app_routes() -> None:
    plain = create_app(test_settings({"CDS_AS_OF": "2025-06-01"})).test_client()
    cards = plain.post(URL, json=hook_request("s01", with_prefetch=True)).get_json()["cards"]
    assert all(link["type"] == "absolute" for card in cards for link in card.get("links", []))
    assert plain.get("/smart/launch?iss=x&launch=y").status_code == 404


def test_the_session_cookie_is_sealed_and_expires() -> None:
    now = [1_000_000.0]
    codec = SessionCodec(b"k" * 32, clock=lambda: now[0])
    patient = "patient-id-in-clear-0042"
    session = AppSession(ISS, "the-access-token-in-clear", patient, "card-1", patient, now[0] + 60, "csrf")
    cookie = codec.seal(session)
    sealed = base64.urlsafe_b64decode(cookie)
    for clear in ("the-access-token-in-clear", patient):
        assert clear not in cookie and clear.encode() not in sealed
    assert codec.open(cookie, 900) == session
    assert codec.open(cookie[:-4] + "AAAA", 900) is None
    assert SessionCodec(b"x" * 32, clock=lambda: now[0]).open(cookie, 900) is None
    pending = PendingLaunch("state", "verifier", ISS, f"{ISS}/auth", f"{ISS}/token", now[0])
    assert codec.open(codec.seal(pending), 600) == pending
    now[0] += 901
    assert codec.open(cookie, 900) is None


@pytest.mark.parametrize(
    ("path", "status", "title"),
    [
        ("/smart/launch", 400, "Not an EHR launch"),
        ("/smart/launch?iss=http://127.0.0.1:9/fhir&launch=x", 403, "This FHIR server is not allowed"),
        ("/smart/callback?code=c&state=s", 400, "This sign-in does not belong to this browser session"),
        ("/smart/app", 401, "No active session"),
    ],
)
def test_refusals_are_plain_pages_that_say_why(
    client: FlaskClient, path: str, status: int, title: str
) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert response.content_type == "text/html; charset=utf-8"
    assert f'<h1 id="refused-title">{title}</h1>' in response.get_data(as_text=True).replace("&#39;", "'")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "script-src" not in response.headers["Content-Security-Policy"]  # default-src 'none': no script
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_the_cds_hooks_sandboxs_open_server_link_gets_a_hint(client: FlaskClient) -> None:
    response = client.get("/smart/launch?fhirServiceUrl=http://127.0.0.1:8090&patientId=s01")
    assert response.status_code == 400
    assert "without a SMART launch" in response.get_data(as_text=True)


def test_feedback_needs_the_session_and_its_form_token(client: FlaskClient) -> None:
    assert client.post("/smart/feedback", data={"reason": "patient-refuses"}).status_code == 401


def test_the_stylesheet_is_served_locally(client: FlaskClient) -> None:
    response = client.get("/smart/app.css")
    assert response.status_code == 200
    css = response.get_data(as_text=True)
    assert "@media print" in css and "url(" not in css and "@import" not in css


def test_app_context_that_is_not_ours_is_ignored() -> None:
    assert parse_app_context("not json") == (None, None)
    assert parse_app_context(orjson.dumps(["x"]).decode()) == (None, None)
    assert parse_app_context('{"decision": "d", "patient": "p"}') == ("d", "p")


def test_the_render_benchmark_runs() -> None:
    from benchmarks.smart_render import measure

    result = measure("small", 1)
    assert result["outcome"] == "ESCALATE" and result["html_bytes"] > 10_000
