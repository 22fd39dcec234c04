"""Client authentication through the real HTTP app (CDS_AUTH_MODE=required with a trusted-issuers file):
the order of answers, the fixed 401 body, replay across two workers sharing the database, dev tokens,
and the fhirServer guard refusing before any outbound request."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.wire.auth.dev_keys import mint_dev_token
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request
from tests.wire.test_security_support import Key, ec_key, jwks, rsa_key

BASE = "http://127.0.0.1:8000"
SERVICE = f"{BASE}/cds-services/osteoporosis-escalation"
ISS = "https://ehr.example.org/api/FHIR/R4"
FHIR = "https://ehr.example.org/api/FHIR/R4"
PATH = "/cds-services/osteoporosis-escalation"


def token(key: Key, aud: str = SERVICE, **overrides: Any) -> str:
    import jwt

    now = int(time.time())
    body = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **overrides}
    return jwt.encode(body, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


def make_app(tmp_path: Path, key: Key, **env: str) -> FlaskClient:
    tmp_path.mkdir(parents=True, exist_ok=True)
    jwks_file = tmp_path / "ehr-jwks.json"
    jwks_file.write_text(json.dumps(jwks(key)), encoding="utf-8")
    issuers = tmp_path / "issuers.yaml"
    issuers.write_text(
        f"issuers:\n  - iss: {ISS}\n    jwks_file: {jwks_file}\n    algorithms: [{key.alg}]\n"
        f"    fhir_servers: [{FHIR}]\n",
        encoding="utf-8",
    )
    settings = test_settings(
        {
            "CDS_AUTH_MODE": "required",
            "CDS_TRUSTED_ISSUERS": str(issuers),
            "CDS_PUBLIC_BASE_URL": BASE,
            "CDS_DATA_DIR": str(tmp_path),
            "CDS_AS_OF": "2025-06-01",
            **env,
        }
    )
    return create_app(settings).test_client()


@pytest.fixture(scope="module")
def es_key() -> Key:
    return ec_key("ehr-es-1")


def post(client: FlaskClient, body: Any, auth: str | None, content_type: str = "application/json") -> Any:
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(PATH, data=data, headers=headers, content_type=content_type)


def test_valid_es384_and_rs384_tokens_get_cards(tmp_path: Path, es_key: Key) -> None:
    client = make_app(tmp_path / "es", es_key)
    assert post(client, hook_request("s01", with_prefetch=True), token(es_key)).status_code == 200
    rs = rsa_key("ehr-rs-1")
    client = make_app(tmp_path / "rs", rs)
    response = post(client, hook_request("s01", with_prefetch=True), token(rs))
    assert response.status_code == 200
    assert response.get_json()["cards"][0]["extension"]["osteo-cds/decision"]["outcome"] == "ESCALATE"


def test_discovery_and_feedback_need_their_own_audience(tmp_path: Path, es_key: Key) -> None:
    client = make_app(tmp_path, es_key)
    assert client.get("/cds-services").status_code == 401
    ok = client.get(
        "/cds-services", headers={"Authorization": f"Bearer {token(es_key, f'{BASE}/cds-services')}"}
    )
    assert ok.status_code == 200
    wrong = client.get("/cds-services", headers={"Authorization": f"Bearer {token(es_key)}"})
    assert wrong.status_code == 401  # a service-call token is not a discovery token
    feedback = {"feedback": []}
    fb = client.post(
        f"{PATH}/feedback",
        json=feedback,
        headers={"Authorization": f"Bearer {token(es_key, SERVICE + '/feedback')}"},
    )
    assert fb.status_code in (200, 400)  # authenticated; an empty batch is the validator's business
    assert client.post(f"{PATH}/feedback", json=feedback).status_code == 401


def test_401_comes_after_404_and_405_and_before_415_413_400(tmp_path: Path, es_key: Key) -> None:
    client = make_app(tmp_path, es_key, CDS_MAX_BODY_BYTES="1000")
    assert client.post("/cds-services/unknown", json={}).status_code == 404
    assert client.put(PATH, json={}).status_code == 405
    responses_401 = [
        post(client, b"not json", None, "text/plain"),  # would be 415
        post(client, b"x" * 5000, None),  # would be 413
        post(client, b"{", None),  # would be 400
        post(client, hook_request("s01", with_prefetch=False), "not-a-jwt"),
    ]
    assert [r.status_code for r in responses_401] == [401, 401, 401, 401]
    bodies = {json.dumps(r.get_json(), sort_keys=True) for r in responses_401}
    assert len(bodies) == 1, "every 401 has the same body: no hint of the reason"
    assert responses_401[0].get_json()["issue"][0]["code"] == "login"
    assert all(r.headers["WWW-Authenticate"].startswith("Bearer") for r in responses_401)
    # authenticated: the other checks answer
    assert post(client, b"not json", token(es_key), "text/plain").status_code == 415
    assert post(client, b"x" * 5000, token(es_key)).status_code == 413
    assert post(client, b"{", token(es_key)).status_code == 400


def test_replay_is_refused_across_two_workers_sharing_the_database(tmp_path: Path, es_key: Key) -> None:
    worker_1 = make_app(tmp_path, es_key)
    worker_2 = make_app(tmp_path, es_key)  # a second app: its own engine, the same SQLite file
    jwt_once = token(es_key)
    request = hook_request("s02", with_prefetch=True)
    assert post(worker_1, request, jwt_once).status_code == 200
    assert post(worker_2, request, jwt_once).status_code == 401
    assert post(worker_1, request, jwt_once).status_code == 401


def test_fhir_server_not_allowed_is_403_with_no_outbound_request(tmp_path: Path, es_key: Key) -> None:
    client = make_app(tmp_path, es_key)
    for url in ("https://evil.example.com/fhir", "http://169.254.169.254/latest", "http://127.0.0.1:9/fhir"):
        request = hook_request("s01", with_prefetch=True, fhir_server=url, access_token="at-123")
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            response = post(client, request, token(es_key))
            assert len(rsps.calls) == 0
        assert response.status_code == 403, url
        assert response.get_json()["issue"][0]["code"] == "forbidden"


def test_dev_mode_accepts_dev_tokens_and_loopback_fhir_servers(tmp_path: Path) -> None:
    settings = test_settings(
        {"CDS_AUTH_MODE": "dev", "CDS_DATA_DIR": str(tmp_path), "CDS_AS_OF": "2025-06-01"}
    )
    client = create_app(settings).test_client()
    for url in (SERVICE, SERVICE.replace("127.0.0.1", "localhost")):
        response = post(client, hook_request("s01", with_prefetch=True), mint_dev_token(tmp_path, url))
        assert response.status_code == 200
    assert post(client, hook_request("s01", with_prefetch=True), None).status_code == 401
    remote = hook_request("s01", with_prefetch=True, fhir_server="https://fhir.example.org/r4")
    assert post(client, remote, mint_dev_token(tmp_path, SERVICE)).status_code == 403


def test_dev_token_is_refused_in_required_mode(tmp_path: Path, es_key: Key) -> None:
    client = make_app(tmp_path, es_key)
    assert (
        post(client, hook_request("s01", with_prefetch=True), mint_dev_token(tmp_path, SERVICE)).status_code
        == 401
    )
