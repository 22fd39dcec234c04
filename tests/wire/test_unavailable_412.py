"""412 answers say which prefetch key could not be obtained and why, and the decision log records them
(issue: Epic sends the call without fhirAuthorization when the registered endpoint URL mismatches; the
412 used to be unexplained)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import responses

from tests.support.fixtures import hook_request
from tests.wire.test_auth_http import FHIR, PATH, make_app, token
from tests.wire.test_security_support import Key, ec_key


@pytest.fixture(scope="module")
def es_key() -> Key:
    return ec_key("ehr-es-1")


def _unavailable_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.decision  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "decision", {}).get("event") == "cds_data_unavailable"
    ]


def test_fhir_server_without_authorization_names_the_registration_check(
    tmp_path: Path, es_key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(tmp_path, es_key)
    caplog.set_level(logging.INFO)
    request = hook_request("s01", with_prefetch=False, fhir_server=FHIR)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        response = client.post(PATH, json=request, headers={"Authorization": f"Bearer {token(es_key)}"})
        assert len(rsps.calls) == 0, "never query fhirServer without the EHR's access token"
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"][0].startswith("prefetch.")
    assert "without fhirAuthorization" in issue["diagnostics"]
    assert "registered endpoint URL" in issue["diagnostics"]
    [line] = _unavailable_lines(caplog)
    assert line["hookInstance"] == request["hookInstance"]
    assert line["status"] == 412
    assert line["expression"] == issue["expression"]
    assert "registered endpoint URL" in line["reason"]
    assert "s01" not in json.dumps(line), "no patient id in the log line"


def test_missing_prefetch_without_fhir_server_says_so(
    tmp_path: Path, es_key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(tmp_path, es_key)
    caplog.set_level(logging.INFO)
    request = hook_request("s01", with_prefetch=True)
    del request["prefetch"]["conditions"]
    response = client.post(PATH, json=request, headers={"Authorization": f"Bearer {token(es_key)}"})
    assert response.status_code == 412
    issue = response.get_json()["issue"][0]
    assert issue["expression"] == ["prefetch.conditions"]
    assert "no fhirServer" in issue["diagnostics"]
    assert [line["expression"] for line in _unavailable_lines(caplog)] == [["prefetch.conditions"]]
