"""One FHIR id rule (1-64 characters) at every layer: an id the request layer accepts is never refused
further down. Before, ids of 65-256 characters passed request validation and failed card rendering (500)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.core.fhir_id import FHIR_ID_MAX_CHARS, is_fhir_id
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request

URL = "/cds-services/osteoporosis-escalation"


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    return create_app(test_settings({"CDS_AS_OF": "2025-06-01"})).test_client()


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("a" * FHIR_ID_MAX_CHARS, True),
        ("a" * (FHIR_ID_MAX_CHARS + 1), False),
        ("A-1.b", True),
        ("", False),
        ("a_b", False),
        ("a/b", False),
        (None, False),
        (12, False),
    ],
)
def test_fhir_id_rule(value: Any, valid: bool) -> None:
    assert is_fhir_id(value) is valid


def _request_with(field: str, value: str) -> dict[str, Any]:
    request = hook_request("s01", with_prefetch=True)
    request["context"][field] = value
    return request


@pytest.mark.parametrize("length", [65, 100, 256, 257])
@pytest.mark.parametrize("field", ["patientId", "encounterId"])
def test_overlong_context_id_is_400_naming_the_element(client: FlaskClient, field: str, length: int) -> None:
    response = client.post(URL, json=_request_with(field, "a" * length))
    assert response.status_code == 400
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"] == [f"context.{field}"]
    assert "1-64" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("length", [65, 256])
def test_overlong_user_id_is_400(client: FlaskClient, length: int) -> None:
    response = client.post(URL, json=_request_with("userId", "Practitioner/" + "a" * length))
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["context.userId"]


def test_id_of_64_characters_is_served(client: FlaskClient) -> None:
    """The longest valid id goes through the whole pipeline, card rendering included."""
    long_id = "s01" + "x" * (FHIR_ID_MAX_CHARS - 3)
    request = hook_request("s01", with_prefetch=True)
    for value in request["prefetch"].values():
        for entry in (value or {}).get("entry", []) if value.get("resourceType") == "Bundle" else []:
            _repoint_patient(entry["resource"], long_id)
        if value.get("resourceType") == "Patient":
            value["id"] = long_id
    request["context"]["patientId"] = long_id
    response = client.post(URL, json=request)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    assert cards and cards[0]["extension"]["osteo-cds/decision"]["outcome"] == "ESCALATE"


def _repoint_patient(resource: dict[str, Any], patient_id: str) -> None:
    for key in ("subject", "patient"):
        if isinstance(resource.get(key), dict) and "reference" in resource[key]:
            resource[key]["reference"] = f"Patient/{patient_id}"
