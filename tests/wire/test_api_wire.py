"""HTTP wire behaviour of the CDS Hooks API, driven through the real Flask app with a fake service."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.core.errors import DataUnavailable, Issue, NotR4Server, ServiceError
from cds_service.core.json_empty import drop_empty
from cds_service.present.card_model import Card, Coding, HookResponse, Source, Suggestion
from cds_service.wire.auth.jwt_verify import AuthContext
from cds_service.wire.cdshooks import PatientViewRequest, operation_outcome
from tests.support.app_settings import test_settings

SERVICE_ID = "osteoporosis-escalation"
SERVICE_URL = f"/cds-services/{SERVICE_ID}"
FEEDBACK_URL = f"{SERVICE_URL}/feedback"
SANDBOX = "https://sandbox.cds-hooks.org"
TOKEN = "secret-access-token-value"
PATIENT_ID = "pat-s01-Doe"
MAX_BODY = 2_000


def card() -> Card:
    return Card(
        uuid="4e0a3a1e-3283-4575-ab82-028d55fe2719",
        summary="Escalate to anabolic therapy",
        indicator="warning",
        detail="",
        source=Source("Osteoporosis protocol", url=None, icon=""),
        kind="ESCALATE",
        suggestions=[Suggestion("Order teriparatide", "s1", is_recommended=False, actions=[])],
        selection_behavior="at-most-one",
        links=[],
        override_reasons=[Coding("urn:x", "x", "X")],
        extension={"com.example.decision": {"missing": [], "note": None, "evidence": {}}},
    )


class FakeService:
    """Implements HookService; `behaviour` decides what handle() does."""

    service_id = SERVICE_ID

    def __init__(self) -> None:
        self.behaviour: Callable[[PatientViewRequest], HookResponse] = lambda _r: HookResponse([card()])
        self.requests: list[PatientViewRequest] = []
        self.descriptor_error: Exception | None = None

    def descriptor(self) -> dict[str, Any]:
        if self.descriptor_error is not None:
            raise self.descriptor_error
        return {
            "id": SERVICE_ID,
            "hook": "patient-view",
            "title": "Osteoporosis treatment escalation",
            "description": "Suggests escalation to sequential anabolic therapy",
            "prefetch": {"patient": "Patient/{{context.patientId}}"},
            "usageRequirements": None,
        }

    def handle(
        self,
        request: PatientViewRequest,
        auth: AuthContext,
        turn: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> HookResponse:
        self.requests.append(request)
        with turn():
            return self.behaviour(request)

    def protocol_version(self) -> str:
        return "2024.1"


def patient_view(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": "https://ehr.example.org/fhir",
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Observation.read",
            "subject": "cds-service4",
        },
        "context": {"userId": "Practitioner/example", "patientId": PATIENT_ID, "encounterId": "89284"},
        "prefetch": {"patient": {"resourceType": "Patient", "id": PATIENT_ID}, "bmd": None},
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not ...}


def wire_settings(env: dict[str, str] | None = None) -> Settings:
    """Auth off (JWTs are tested in test_security_*), the example fhirServer allow-listed."""
    allowed = "https://ehr.example.org/fhir,http://hooks.smarthealthit.org:9080"
    return test_settings({"CDS_FHIR_ALLOWLIST": allowed, **(env or {})})


@pytest.fixture
def fake() -> FakeService:
    return FakeService()


@pytest.fixture
def app(fake: FakeService) -> Flask:
    return create_app(wire_settings({"CDS_MAX_BODY_BYTES": str(MAX_BODY)}), fake)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: Any, url: str = SERVICE_URL, **kwargs: Any) -> TestResponse:
    kwargs.setdefault("content_type", "application/json")
    kwargs.setdefault("headers", {"Origin": SANDBOX})
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data=data, **kwargs)


def outcome(response: TestResponse) -> dict[str, Any]:
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], "an OperationOutcome needs at least one issue"
    for issue in body["issue"]:
        assert issue["severity"] == "error"
        assert issue["code"]
        assert issue["diagnostics"]
    return body  # type: ignore[no-any-return]


def expressions(response: TestResponse) -> list[str]:
    return [expr for issue in outcome(response)["issue"] for expr in issue.get("expression", [])]


def empty_values(obj: Any, path: str = "$") -> Iterator[str]:
    """Paths of null/""/[]/{} values, skipping the content of CDS Hooks extension objects."""
    if obj is None or obj in ("", [], {}):
        yield path
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key == "extension" and isinstance(value, dict) and value:
                continue
            if key in ("cards", "services") and value == []:
                continue
            yield from empty_values(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from empty_values(value, f"{path}[{index}]")


# --- discovery -------------------------------------------------------------------------------


def test_discovery_lists_the_service_and_omits_empty_fields(client: FlaskClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    services = response.get_json()["services"]
    assert [s["id"] for s in services] == [SERVICE_ID]
    assert services[0]["hook"] == "patient-view"
    assert services[0]["title"] and services[0]["description"]
    assert services[0]["prefetch"] == {"patient": "Patient/{{context.patientId}}"}
    assert "usageRequirements" not in services[0]
    assert list(empty_values(response.get_json())) == []


# --- successful call -------------------------------------------------------------------------


def test_call_returns_cards_and_passes_the_typed_request(client: FlaskClient, fake: FakeService) -> None:
    response = post(client, patient_view())
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert len(response.get_json()["cards"]) == 1
    (request,) = fake.requests
    assert request.context.patientId == PATIENT_ID
    assert request.context.userId == "Practitioner/example"
    assert request.fhirAuthorization is not None
    assert request.fhirAuthorization.access_token == TOKEN
    assert request.prefetch == {"patient": {"resourceType": "Patient", "id": PATIENT_ID}, "bmd": None}


def test_response_omits_empty_optional_fields_but_keeps_card_extension(client: FlaskClient) -> None:
    body = post(client, patient_view()).get_json()
    assert list(empty_values(body)) == []
    (only,) = body["cards"]
    assert "detail" not in only and "links" not in only
    assert only["source"] == {"label": "Osteoporosis protocol"}
    assert "actions" not in only["suggestions"][0]
    assert "isRecommended" not in only["suggestions"][0]  # the typed card writes it only when true
    assert "userSelected" not in only["overrideReasons"][0]
    assert only["extension"] == {"com.example.decision": {"missing": [], "note": None, "evidence": {}}}


def test_no_cards_is_an_empty_list_not_an_omission(client: FlaskClient, fake: FakeService) -> None:
    fake.behaviour = lambda _r: HookResponse([])
    response = post(client, patient_view())
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/fhir+json", "application/json; charset=utf-8"]
)
def test_json_media_types_are_accepted(client: FlaskClient, content_type: str) -> None:
    assert post(client, patient_view(), content_type=content_type).status_code == 200


def test_spec_example_request_without_patient_claim_is_accepted(client: FlaskClient) -> None:
    # FHIR tools IG example request (Binary-CDSHooksRequestPV): http fhirServer, no fhirAuthorization.patient.
    body = patient_view(fhirServer="http://hooks.smarthealthit.org:9080", prefetch=...)
    assert post(client, body).status_code == 200


def test_epic_style_request_with_extension_object_and_unknown_fields(
    client: FlaskClient, fake: FakeService
) -> None:
    body = patient_view(
        context={
            "userId": "PractitionerRole/eM5CWtq15N0WJeuCet5bJlQ3",
            "patientId": "erXuFYUfucBZaryVksYEcMg3",
            "someFutureContextKey": {"a": 1},
        },
        extension={
            "com.epic.cdshooks.request.bpa-trigger-action": "60",
            "com.epic.cdshooks.request.cds-hooks-specification-version": "1.1",
            "com.epic.cdshooks.request.fhir-version": "R4",
        },
        unknownTopLevel=[1, 2, 3],
    )
    body["fhirAuthorization"]["scope"] = "Observation.Search (Labs) (R4) Patient.Read (R4)"
    body["fhirAuthorization"]["patient"] = "erXuFYUfucBZaryVksYEcMg3"
    response = post(client, body)
    assert response.status_code == 200
    (request,) = fake.requests
    assert request.extension == body["extension"]
    assert request.context.userId.startswith("PractitionerRole/")


def test_sandbox_request_without_authorization_or_prefetch(client: FlaskClient, fake: FakeService) -> None:
    body = patient_view(fhirAuthorization=..., prefetch=...)
    body["context"] = {"patientId": "smart-1288992", "userId": "Practitioner/COREPRACTITIONER1"}
    assert post(client, body).status_code == 200
    assert fake.requests[0].fhirAuthorization is None
    assert fake.requests[0].prefetch is None


def test_access_token_is_not_in_the_request_repr(client: FlaskClient, fake: FakeService) -> None:
    post(client, patient_view())
    assert TOKEN not in repr(fake.requests[0])


# --- 400 -------------------------------------------------------------------------------------


def without(path: str) -> dict[str, Any]:
    body = patient_view()
    *parents, leaf = path.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    del target[leaf]
    return body


def with_value(path: str, value: Any) -> dict[str, Any]:
    body = patient_view()
    *parents, leaf = path.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    return body


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        pytest.param(without("hook"), "hook", id="missing-hook"),
        pytest.param(without("hookInstance"), "hookInstance", id="missing-hookInstance"),
        pytest.param(without("context"), "context", id="missing-context"),
        pytest.param(without("context.patientId"), "context.patientId", id="missing-patientId"),
        pytest.param(without("context.userId"), "context.userId", id="missing-userId"),
        pytest.param(with_value("hook", "order-sign"), "hook", id="other-hook"),
        pytest.param(without("fhirServer"), "fhirServer", id="authorization-without-fhirServer"),
        pytest.param(with_value("hookInstance", 42), "hookInstance", id="hookInstance-number"),
        pytest.param(with_value("context", "Patient/1"), "context", id="context-string"),
        pytest.param(with_value("context.patientId", 1288992), "context.patientId", id="patientId-number"),
        pytest.param(with_value("context.encounterId", ["e1"]), "context.encounterId", id="encounterId-list"),
        pytest.param(with_value("context.patientId", "1/../x"), "context.patientId", id="patientId-not-id"),
        pytest.param(with_value("context.userId", "Device/1"), "context.userId", id="userId-type"),
        pytest.param(with_value("context.userId", "Practitioner"), "context.userId", id="userId-no-id"),
        pytest.param(with_value("context.userId", "example"), "context.userId", id="userId-bare-id"),
        pytest.param(
            with_value("fhirAuthorization.expires_in", "300"),
            "fhirAuthorization.expires_in",
            id="expires-string",
        ),
        pytest.param(
            without("fhirAuthorization.access_token"), "fhirAuthorization.access_token", id="missing-token"
        ),
        pytest.param(
            with_value("fhirAuthorization.token_type", "MAC"), "fhirAuthorization.token_type", id="not-bearer"
        ),
        pytest.param(
            with_value("fhirAuthorization", "Bearer x"), "fhirAuthorization", id="authorization-string"
        ),
        pytest.param(with_value("extension", ["com.epic.x"]), "extension", id="extension-list"),
        pytest.param(with_value("prefetch", []), "prefetch", id="prefetch-list"),
        pytest.param(
            with_value("prefetch.patient", "Patient/1"), "prefetch.patient", id="prefetch-value-string"
        ),
        pytest.param(
            with_value("context", [{"key": "patientId", "value": "1"}]), "context", id="pre-1.0-context"
        ),
        pytest.param(patient_view(user="Practitioner/example"), "user", id="pre-1.0-user"),
        pytest.param(patient_view(patient="1288992"), "patient", id="pre-1.0-patient"),
    ],
)
def test_invalid_request_is_400_naming_the_element(
    client: FlaskClient, fake: FakeService, body: dict[str, Any], expression: str
) -> None:
    response = post(client, body)
    assert response.status_code == 400
    assert expression in expressions(response)
    assert fake.requests == []


def test_every_bad_element_is_reported(client: FlaskClient) -> None:
    body = patient_view(hook=..., context={"patientId": 7})
    response = post(client, body)
    assert response.status_code == 400
    assert {"hook", "context.patientId", "context.userId"} <= set(expressions(response))


def test_pre_1_0_request_explains_itself(client: FlaskClient) -> None:
    response = post(client, patient_view(user="Practitioner/example"))
    assert "pre-1.0" in outcome(response)["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "data", ["{not json", "", "   ", '["hook"]', "null", '"patient-view"', '{"hook": "patient-view",}']
)
def test_malformed_or_non_object_json_is_400(client: FlaskClient, data: str) -> None:
    response = post(client, data)
    assert response.status_code == 400
    outcome(response)


def test_diagnostics_do_not_echo_request_values(client: FlaskClient) -> None:
    response = post(client, with_value("context.patientId", "Doe, John 1950-01-01"))
    assert response.status_code == 400
    assert "John" not in response.get_data(as_text=True)


# --- 404 / 405 / 415 / 413 and their order ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url", "kwargs"),
    [
        ("post", "/cds-services/unknown-service", {"json": patient_view()}),
        ("post", "/cds-services/unknown-service/feedback", {"json": {"feedback": []}}),
        ("get", "/cds-services/unknown-service", {}),  # 404 beats 405
        ("put", "/cds-services/unknown-service/feedback", {}),  # 404 beats 405
        ("post", "/cds-services/unknown-service", {"data": "x", "content_type": "text/plain"}),  # beats 415
        ("post", "/not-an-endpoint", {"json": patient_view()}),
        ("get", "/cds-services/", {}),
    ],
)
def test_unknown_path_or_id_is_404(
    client: FlaskClient, method: str, url: str, kwargs: dict[str, Any]
) -> None:
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == 404
    assert outcome(response)["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", SERVICE_URL),
        ("put", SERVICE_URL),
        ("delete", SERVICE_URL),
        ("post", "/cds-services"),
        ("get", FEEDBACK_URL),
        ("post", "/healthz"),
    ],
)
def test_wrong_method_is_405_with_allow(client: FlaskClient, method: str, url: str) -> None:
    response = getattr(client, method)(url, data="x", content_type="text/plain")  # 405 beats 415
    assert response.status_code == 405
    assert outcome(response)["issue"][0]["code"] == "not-supported"
    assert response.headers["Allow"]


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", ""]
)
def test_other_media_types_are_415(client: FlaskClient, content_type: str) -> None:
    response = client.post(SERVICE_URL, data=json.dumps(patient_view()), content_type=content_type)
    assert response.status_code == 415
    outcome(response)


def test_415_beats_400(client: FlaskClient) -> None:
    assert post(client, "{not json", content_type="text/plain").status_code == 415


def test_415_beats_413(client: FlaskClient) -> None:
    assert post(client, "x" * (MAX_BODY + 1), content_type="text/plain").status_code == 415


def test_oversize_body_is_413_before_json_parsing(client: FlaskClient, fake: FakeService) -> None:
    response = post(client, "{" * (MAX_BODY + 1))  # would be a 400 if it were parsed
    assert response.status_code == 413
    assert outcome(response)["issue"][0]["code"] == "too-long"
    assert fake.requests == []


def test_body_at_the_limit_is_read(client: FlaskClient) -> None:
    body = json.dumps(patient_view())
    padded = body[:-1] + "," + '"pad":"' + "p" * (MAX_BODY - len(body) - 10) + '"}'
    assert len(padded.encode()) <= MAX_BODY
    assert post(client, padded).status_code == 200


@pytest.mark.parametrize("werkzeug_limit", [True, False], ids=["werkzeug-limit", "own-reader"])
def test_oversize_body_without_content_length_is_413(
    app: Flask, fake: FakeService, werkzeug_limit: bool
) -> None:
    if not werkzeug_limit:
        app.config["MAX_CONTENT_LENGTH"] = None  # exercise the API's own bounded reader
    environ = EnvironBuilder(
        path=SERVICE_URL,
        method="POST",
        input_stream=io.BytesIO(b" " * (MAX_BODY * 3)),
        content_type="application/json",
        headers=[("Origin", SANDBOX)],
    ).get_environ()
    for key in ("CONTENT_LENGTH", "HTTP_CONTENT_LENGTH"):  # chunked transfer: size known only by reading
        environ.pop(key, None)
    environ["wsgi.input_terminated"] = True
    response = app.test_client().open(Request(environ))
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 413
    outcome(response)
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert fake.requests == []


# --- service errors --------------------------------------------------------------------------


def raising(error: Exception) -> Callable[[PatientViewRequest], HookResponse]:
    def behaviour(_request: PatientViewRequest) -> HookResponse:
        raise error

    return behaviour


@pytest.mark.parametrize(
    "error",
    [
        DataUnavailable("cannot obtain Observation from the FHIR server", "prefetch.bmd"),
        NotR4Server("DSTU2 server"),
    ],
)
def test_data_unavailable_is_412(client: FlaskClient, fake: FakeService, error: DataUnavailable) -> None:
    fake.behaviour = raising(error)
    response = post(client, patient_view())
    assert response.status_code == 412
    assert outcome(response)["issue"][0]["code"] == "incomplete"
    assert expressions(response) == [e for i in error.issues for e in i.expression]


def test_service_error_keeps_its_status(client: FlaskClient, fake: FakeService) -> None:
    fake.behaviour = raising(ServiceError([Issue("forbidden", "issuer not enabled")], 403))
    response = post(client, patient_view())
    assert response.status_code == 403
    assert outcome(response)["issue"][0]["code"] == "forbidden"


def test_unexpected_error_is_500_logged_without_phi(
    client: FlaskClient, fake: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    fake.behaviour = raising(RuntimeError(f"boom for patient {PATIENT_ID}"))
    with caplog.at_level(logging.INFO):
        response = post(client, patient_view())
    assert response.status_code == 500
    assert outcome(response)["issue"][0]["code"] == "exception"
    assert PATIENT_ID not in response.get_data(as_text=True)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the 500 must be logged"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError" in logged and "test_api_wire.py" in logged  # type and stack
    assert PATIENT_ID not in logged and TOKEN not in logged


def test_discovery_failure_is_500_operation_outcome(client: FlaskClient, fake: FakeService) -> None:
    fake.descriptor_error = RuntimeError("knowledge gone")
    response = client.get("/cds-services", headers={"Origin": SANDBOX})
    assert response.status_code == 500
    outcome(response)
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX


def test_operation_outcome_of_error_without_issues() -> None:
    body = operation_outcome(ServiceError([], 500))
    assert body == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "exception", "diagnostics": "ServiceError"}],
    }


# --- CORS ------------------------------------------------------------------------------------


STATUS_REQUESTS: dict[int, tuple[str, str, dict[str, Any]]] = {
    200: ("post", SERVICE_URL, {"json": patient_view()}),
    204: ("options", SERVICE_URL, {}),
    400: ("post", SERVICE_URL, {"data": "{", "content_type": "application/json"}),
    404: ("post", "/cds-services/nope", {"json": patient_view()}),
    405: ("get", SERVICE_URL, {}),
    412: ("post", SERVICE_URL, {"json": patient_view()}),
    413: ("post", SERVICE_URL, {"data": "x" * (MAX_BODY + 1), "content_type": "application/json"}),
    415: ("post", SERVICE_URL, {"data": "x", "content_type": "text/plain"}),
    500: ("post", SERVICE_URL, {"json": patient_view()}),
}


def send(client: FlaskClient, fake: FakeService, status: int, origin: str | None) -> TestResponse:
    if status == 412:
        fake.behaviour = raising(DataUnavailable("no data"))
    if status == 500:
        fake.behaviour = raising(RuntimeError("x"))
    method, url, kwargs = STATUS_REQUESTS[status]
    headers = {"Origin": origin} if origin else {}
    response: TestResponse = getattr(client, method)(url, headers=headers, **kwargs)
    assert response.status_code == status
    return response


@pytest.mark.parametrize("status", sorted(STATUS_REQUESTS))
def test_cors_headers_on_every_status(client: FlaskClient, fake: FakeService, status: int) -> None:
    response = send(client, fake, status, SANDBOX)
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Set-Cookie" not in response.headers
    if status >= 300:
        outcome(response)


@pytest.mark.parametrize("status", sorted(STATUS_REQUESTS))
def test_no_cors_headers_for_other_origins(client: FlaskClient, fake: FakeService, status: int) -> None:
    response = send(client, fake, status, "https://evil.example")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    "url", ["/cds-services", SERVICE_URL, FEEDBACK_URL, "/cds-services/unknown", "/healthz"]
)
def test_preflight_is_204_with_cors_headers(client: FlaskClient, url: str) -> None:
    response = client.options(
        url,
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 204
    assert response.get_data() == b""
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, OPTIONS"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Private-Network" not in response.headers


def test_preflight_private_network_access(client: FlaskClient) -> None:
    response = client.options(
        SERVICE_URL,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Private-Network"] == "true"


def test_wildcard_origin(fake: FakeService) -> None:
    client = create_app(wire_settings({"CDS_CORS_ORIGINS": "*"}), fake).test_client()
    response = client.get("/cds-services", headers={"Origin": "https://anywhere.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_can_be_switched_off(fake: FakeService) -> None:
    client = create_app(wire_settings({"CDS_CORS_DEFAULT_ORIGINS": ""}), fake).test_client()
    response = client.options(
        SERVICE_URL, headers={"Origin": SANDBOX, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


# --- logging ---------------------------------------------------------------------------------


def test_one_structured_log_line_per_call_without_phi(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cds_service"):
        post(client, patient_view())
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.getMessage().startswith('{"event":"cds_call"')
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["hookInstance"] == "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    assert line["status"] == 200
    assert line["cards"] == 1
    assert isinstance(line["duration_ms"], float)
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        PATIENT_ID not in everything and TOKEN not in everything and "Practitioner/example" not in everything
    )


def test_rejected_call_is_logged_with_its_status(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cds_service"):
        post(client, without("context.userId"))
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if '"cds_call"' in r.getMessage()]
    assert line["status"] == 400 and "cards" not in line


# --- feedback --------------------------------------------------------------------------------


def feedback_entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "s1"}],
        "outcomeTimestamp": "2024-06-01T10:00:00Z",
    }
    entry.update(overrides)
    return entry


def test_feedback_is_acknowledged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    overridden = feedback_entry(outcome="overridden", acceptedSuggestions=None)
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = post(client, {"feedback": [feedback_entry(), overridden]}, url=FEEDBACK_URL)
    assert response.status_code == 200
    assert response.get_json() == {}
    (line,) = [
        json.loads(r.getMessage()) for r in caplog.records if '"cds_feedback_stored"' in r.getMessage()
    ]
    assert (line["entries"], line["accepted"], line["overridden"]) == (2, 1, 1)


def test_fhir_server_not_a_url_is_403_before_any_other_check(client: FlaskClient) -> None:
    response = post(client, patient_view(fhirServer="not a url", context={"patientId": PATIENT_ID}))
    assert response.status_code == 403  # the fhirServer guard answers before request validation (400)
    assert "fhirServer" in json.dumps(response.get_json())


@pytest.mark.parametrize(
    ("body", "expression"),
    [
        ({}, "feedback"),
        ({"feedback": {}}, "feedback"),
        ({"feedback": [feedback_entry(card=None)]}, "feedback[0].card"),
        ({"feedback": [feedback_entry(), feedback_entry(outcome="ignored")]}, "feedback[1].outcome"),
        ({"feedback": [feedback_entry(outcomeTimestamp="yesterday")]}, "feedback[0].outcomeTimestamp"),
    ],
)
def test_invalid_feedback_is_400(client: FlaskClient, body: dict[str, Any], expression: str) -> None:
    response = post(client, body, url=FEEDBACK_URL)
    assert response.status_code == 400
    assert expression in expressions(response)


def test_feedback_checks_media_type(client: FlaskClient) -> None:
    assert post(client, "{}", url=FEEDBACK_URL, content_type="text/plain").status_code == 415


# --- health ----------------------------------------------------------------------------------


def test_healthz_reports_versions_and_warnings(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"Authorization": "Bearer whatever"})
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["service_version"]
    assert body["protocol_version"] == "2024.1"
    assert body["auth_mode"] == "off"
    assert "as_of_pinned" not in body
    assert len(body["warnings"]) == 1 and "CDS_AUTH_MODE=off" in body["warnings"][0]


def test_healthz_shows_pinned_date(fake: FakeService) -> None:
    settings = wire_settings({"CDS_AS_OF": "2024-06-30", "CDS_AUTH_MODE": "dev"})
    body = create_app(settings, fake).test_client().get("/healthz").get_json()
    assert body["as_of_pinned"] == "2024-06-30"
    assert body["auth_mode"] == "dev"
    assert len(body["warnings"]) == 1 and "2024-06-30" in body["warnings"][0]


def test_healthz_without_warnings_keeps_the_list(fake: FakeService) -> None:
    body = create_app(wire_settings({"CDS_AUTH_MODE": "dev"}), fake).test_client().get("/healthz").get_json()
    assert body["warnings"] == []


def test_create_app_warns_when_pinned_or_unauthenticated(
    fake: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        create_app(wire_settings({"CDS_AS_OF": "2024-06-30"}), fake)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2024-06-30" in w for w in warnings)
    assert any("CDS_AUTH_MODE=off" in w for w in warnings)


# --- drop_empty ------------------------------------------------------------------------------


def test_drop_empty_is_recursive_and_keeps_falsy_values() -> None:
    body = {
        "cards": [{"a": None, "b": "", "c": [], "d": {}, "e": {"f": {"g": None}}, "h": 0, "i": False}],
        "systemActions": [],
        "list": [None, "", {}, [], "x"],
    }
    assert drop_empty(body) == {"cards": [{"h": 0, "i": False}], "list": ["x"]}


def test_drop_empty_keeps_cards_and_services_lists() -> None:
    assert drop_empty({"cards": []}) == {"cards": []}
    assert drop_empty({"services": []}) == {"services": []}


def test_drop_empty_leaves_extension_objects_untouched() -> None:
    extension: dict[str, Any] = {"com.example": {"missing": [], "x": None, "y": ""}}
    body = {"cards": [{"summary": "s", "extension": extension, "source": {"extension": {}}}]}
    assert drop_empty(body) == {"cards": [{"summary": "s", "extension": extension}]}


def test_refused_origin_is_logged_once_per_origin(
    fake: FakeService, caplog: pytest.LogCaptureFixture
) -> None:
    client = create_app(wire_settings(), fake).test_client()
    caplog.set_level(logging.WARNING, logger="cds_service.wire.cors")
    for _ in range(3):
        response = client.get("/cds-services", headers={"Origin": "https://unknown.example"})
        assert "Access-Control-Allow-Origin" not in response.headers
    client.get("/cds-services", headers={"Origin": SANDBOX})  # allowed: nothing logged
    client.get("/cds-services", headers={"Origin": "https://other.example"})
    refused = [r.getMessage() for r in caplog.records if "CORS: origin" in r.getMessage()]
    assert len(refused) == 2
    assert "https://unknown.example" in refused[0] and "CDS_CORS_ORIGINS" in refused[0]
    assert "https://other.example" in refused[1]
