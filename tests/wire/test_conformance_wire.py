"""CDS Hooks 2.0 conformance of the REAL service over HTTP (Inferno CDS Hooks 2.0 Service-actor rows).

Unlike test_api_wire (fake service) and test_cards (pure renderer), these tests drive the production
descriptor and the production card pipeline through `create_app`, so they fail if the wire output of the
real service drifts. Row ids refer to shared/specs/inferno-requirements/cds-hooks-2.0-requirements.json;
the checklist ids (G2, D6, T1...) to shared/docs/cds-hooks-notes.md. See docs/cds-hooks-conformance.md.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from tests.support.app_settings import test_settings
from tests.support.fixtures import PREFETCH_KEYS, hook_request, load_scenario_index

SCENARIOS = load_scenario_index()
DISCOVERY = "/cds-services"
SERVICE_ID = "osteoporosis-escalation"
URL = f"{DISCOVERY}/{SERVICE_ID}"
PATIENT_VIEW_CONTEXT = {"userId", "patientId", "encounterId"}  # all root-level primitives (LIB)
USER_TOKENS = {"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
# rows 58, T2 (our use). `combo-code` is a token parameter searched by equality (FHIR R4 base parameter
# Observation.code | Observation.component.code): inside the prefetch subset; it finds panels (§3c).
ALLOWED_PARAMS = {"patient", "subject", "code", "combo-code", "date", "_count", "_sort"}
ABSOLUTE_URL = re.compile(r"^https?://[^\s/?#]+\S*$")


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    return create_app(test_settings({"CDS_AS_OF": "2025-06-01"})).test_client()


def empty_paths(node: Any, path: str = "$") -> Iterator[str]:
    """Row 3 / G2: null, "", [] and {} anywhere except `cards: []`, `services: []` and inside an
    extension value (its content is the pre-coordinated object defined in protocol §9)."""
    if node is None or (isinstance(node, str | list | dict) and len(node) == 0):
        yield path
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("cards", "services") and value == []:
                continue
            if key == "extension" and isinstance(value, dict) and value:
                continue
            yield from empty_paths(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from empty_paths(value, f"{path}[{index}]")


def is_coding(value: Any, *, display_required: bool) -> bool:
    if not isinstance(value, dict):
        return False
    if not all(isinstance(value.get(k), str) and value[k].strip() for k in ("code", "system")):
        return False
    if display_required or "display" in value:
        return isinstance(value.get("display"), str) and bool(value["display"].strip())
    return True


# --- discovery (rows 4-13, 29, 36, 55-59; D1-D7, T1-T4) ---------------------------------------------------


def test_real_discovery_document(client: FlaskClient) -> None:
    response = client.get(DISCOVERY)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["services"] and isinstance(body["services"], list)
    assert list(empty_paths(body)) == []
    (service,) = body["services"]  # D7: never an empty list; D5: one id
    for field in ("hook", "description", "id", "title", "usageRequirements"):
        assert isinstance(service[field], str) and service[field].strip(), field
    assert service["hook"] == "patient-view"
    assert service["id"] == SERVICE_ID
    assert "version" not in service and "hookVersion" not in service  # D6: no 3.0-ballot fields
    prefetch = service["prefetch"]
    assert isinstance(prefetch, dict) and list(prefetch) == list(PREFETCH_KEYS)
    assert all(isinstance(v, str) for v in prefetch.values())


def test_real_prefetch_templates_use_only_valid_tokens_and_the_query_subset(client: FlaskClient) -> None:
    templates = client.get(DISCOVERY).get_json()["services"][0]["prefetch"]
    for key, template in templates.items():
        tokens = re.findall(r"\{\{(.*?)\}\}", template)
        assert tokens, key
        assert template.count("{{") == template.count("}}") == len(tokens)  # row 55
        for token in tokens:  # rows 56, 57, 59; T1
            if token.startswith("context."):
                assert token.removeprefix("context.") in PATIENT_VIEW_CONTEXT, (key, token)
            else:
                assert token in USER_TOKENS, (key, token)
        assert "{{context.encounterId}}" not in template  # T3: optional context key
        parts = urlsplit(template.replace("{{", "").replace("}}", ""))
        if not parts.query:  # instance read Type/id
            assert re.fullmatch(r"[A-Z][A-Za-z]+/context\.patientId", parts.path), (key, template)
            continue
        assert re.fullmatch(r"[A-Z][A-Za-z]+", parts.path), (key, template)
        for name, value in parse_qsl(parts.query, keep_blank_values=True):  # row 58; T2, T4
            base, _, modifier = name.partition(":")
            assert base in ALLOWED_PARAMS, (key, name)
            assert modifier in ("", "in"), (key, name)
            if base == "_sort":
                assert re.fullmatch(r"-?[a-z][a-z-]*", value), (key, value)  # FHIR syntax, not sort:desc


# --- service call (rows 16, 74-77, 80-147, 214-220; C1-C11) ----------------------------------------------


def test_service_answers_at_the_url_built_from_the_discovery_id(client: FlaskClient) -> None:
    service_id = client.get(DISCOVERY).get_json()["services"][0]["id"]
    response = client.post(f"{DISCOVERY}/{service_id}", json=hook_request("s01", with_prefetch=True))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert isinstance(body["cards"], list) and body["cards"]
    assert set(body) <= {"cards", "systemActions"}


def check_card(card: dict[str, Any]) -> None:
    assert isinstance(card["uuid"], str)
    uuid.UUID(card["uuid"])
    assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140  # row 83
    assert card["indicator"] in ("info", "warning", "critical")  # rows 87, 88
    if "detail" in card:
        assert isinstance(card["detail"], str)
    source = card["source"]  # rows 90, 105-116
    assert isinstance(source.get("label"), str) and source["label"].strip(), f"source.label: {source}"
    for field in ("url", "icon"):
        if field in source:
            assert isinstance(source[field], str) and ABSOLUTE_URL.match(source[field]), f"source.{field}"
    if "topic" in source:  # rows 115, 216-218, 220
        assert is_coding(source["topic"], display_required=False), f"source.topic: {source['topic']}"
    if "suggestions" in card:  # rows 92-96, 117-135
        assert card["selectionBehavior"] in ("at-most-one", "any")
        suggestions = card["suggestions"]
        assert isinstance(suggestions, list) and suggestions
        if card["selectionBehavior"] == "at-most-one":
            assert sum(1 for s in suggestions if s.get("isRecommended") is True) <= 1
        for suggestion in suggestions:
            assert isinstance(suggestion["label"], str) and suggestion["label"].strip()
            if "uuid" in suggestion:
                assert isinstance(suggestion["uuid"], str)
            if "isRecommended" in suggestion:
                assert isinstance(suggestion["isRecommended"], bool)
            for action in suggestion.get("actions", []):
                assert action["type"] in ("create", "update", "delete")
                assert isinstance(action["description"], str) and action["description"].strip()
                if action["type"] in ("create", "update"):
                    assert isinstance(action["resource"], dict) and action["resource"]["resourceType"]
                if action["type"] == "create":
                    assert "id" not in action["resource"]  # a NEW resource
                if action["type"] == "delete":
                    assert isinstance(action["resourceId"], list | str)
    else:
        assert "selectionBehavior" not in card
    for reason in card.get("overrideReasons", []):  # rows 98, 100, 136, 219
        assert is_coding(reason, display_required=True), f"overrideReason: {reason}"
    for link in card.get("links", []):  # rows 103, 138-147
        assert isinstance(link["label"], str) and ABSOLUTE_URL.match(link["url"])
        assert link["type"] in ("absolute", "smart")
        if link["type"] == "absolute":
            assert "appContext" not in link
    if "extension" in card:
        assert isinstance(card["extension"], dict)  # row 214


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_every_real_card_conforms(client: FlaskClient, scenario: dict[str, Any]) -> None:
    response = client.post(URL, json=hook_request(scenario["id"], with_prefetch=True))
    assert response.status_code == 200
    body = response.get_json()
    assert list(empty_paths(body)) == []  # row 3 / G2
    for card in body["cards"]:
        check_card(card)


def test_card_and_suggestion_uuids_are_fresh_on_every_call(client: FlaskClient) -> None:
    request = hook_request("s01", with_prefetch=True)
    ids: list[str] = []
    for _ in range(2):
        for card in client.post(URL, json=request).get_json()["cards"]:
            ids.append(card["uuid"])
            ids.extend(s["uuid"] for s in card.get("suggestions", []))
    assert len(ids) > 2 and len(ids) == len(set(ids))  # row 80; C6


def test_no_guidance_is_200_with_an_empty_cards_array(client: FlaskClient) -> None:
    response = client.post(URL, json=hook_request("s02", with_prefetch=True))  # RESPONSE_MET: no card
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}  # rows 74, 77; C1


# --- prefetch / FHIR access (rows 52, 54; H1, H2) ----------------------------------------------------------


def assert_412(response: Any, expression: str | None = None) -> None:
    assert response.status_code == 412, response.get_json()
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"]  # C14
    if expression is not None:
        assert expression in [e for issue in body["issue"] for e in issue.get("expression", [])]


def test_no_prefetch_and_no_fhir_server_is_412(client: FlaskClient) -> None:
    assert_412(client.post(URL, json=hook_request("s01", with_prefetch=False)))


def test_one_absent_prefetch_key_and_no_fhir_server_is_412_naming_it(client: FlaskClient) -> None:
    request = hook_request("s01", with_prefetch=True)
    del request["prefetch"]["labs"]
    assert_412(client.post(URL, json=request), "prefetch.labs")


def closed_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_fhir_server_without_prefetch_is_412(client: FlaskClient) -> None:
    fhir = f"http://127.0.0.1:{closed_loopback_port()}/fhir"  # loopback is allowed outside `required`
    request = hook_request("s01", with_prefetch=False, fhir_server=fhir, access_token="tok-412")
    assert_412(client.post(URL, json=request))


def test_null_prefetch_values_mean_no_data_not_412(client: FlaskClient) -> None:
    request = hook_request("s01", with_prefetch=True)
    request["prefetch"] = {
        key: (value if key == "patient" else None) for key, value in request["prefetch"].items()
    }
    response = client.post(URL, json=request)  # no fhirServer: any re-query attempt would be a 412
    assert response.status_code == 200, response.get_json()
    assert isinstance(response.get_json()["cards"], list)
