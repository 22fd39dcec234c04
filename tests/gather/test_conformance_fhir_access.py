"""CDS Hooks 2.0 conformance, production trust mode (CDS_AUTH_MODE=required) through the real app.

Row 61 (fhir-resource-access): "CDS Hooks requires that CDS Services present a valid access token to the
FHIR server with each API call. Thus, a CDS Service requires an access token before communicating with the
CDS Client's FHIR resource server." With no `fhirAuthorization` and missing prefetch, the service cannot
obtain the data, so row 54 applies: 412, and no unauthenticated request to the EHR's FHIR server (notes H9:
token-less self-query is a sandbox-mode exception, "otherwise 412").
Row 208 / X3: CORS headers also on the 401 a browser client gets without a valid JWT.
See docs/cds-hooks-conformance.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import responses

from tests.support.fixtures import hook_request, load_scenario_bundle
from tests.support.mock_fhir import MockFhirServer
from tests.wire.test_auth_http import FHIR, PATH, make_app, token
from tests.wire.test_security_support import ec_key

SANDBOX = "https://sandbox.cds-hooks.org"


def test_no_fhir_request_without_an_access_token_in_required_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in test_scenarios: `responses` mocks the FHIR server by URL, so the IP-pinning transport is replaced
    # by a plain session; the fhirServer policy check (FHIR is listed for the issuer) still runs.
    monkeypatch.setattr("cds_service.wire.service.guarded_session", lambda *_args: requests.Session())
    key = ec_key("conformance-es-1")
    client = make_app(tmp_path, key)
    request = hook_request("s01", with_prefetch=False, fhir_server=FHIR)  # fhirServer, no fhirAuthorization
    assert "fhirAuthorization" not in request
    server = MockFhirServer(FHIR, load_scenario_bundle("s01"), expected_token=None)  # an open server
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server.register(rsps)
        response = client.post(PATH, json=request, headers={"Authorization": f"Bearer {token(key)}"})
    unauthenticated = [str(call.url) for call in server.calls if not call.headers.get("Authorization")]
    assert unauthenticated == [], (
        f"{len(unauthenticated)} FHIR request(s) sent to fhirServer without an access token "
        f"(answer: HTTP {response.status_code})"
    )
    assert response.status_code == 412


def test_401_carries_cors_headers_for_an_allowed_origin(tmp_path: Path) -> None:
    client = make_app(tmp_path, ec_key("conformance-es-2"))
    for response in (
        client.get("/cds-services", headers={"Origin": SANDBOX}),
        client.post(PATH, json=hook_request("s01", with_prefetch=True), headers={"Origin": SANDBOX}),
    ):
        assert response.status_code == 401
        assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
        assert response.get_json()["resourceType"] == "OperationOutcome"
