"""A `responses`-mocked FHIR R4 server that answers the service's searches from a scenario Bundle.

It implements just what the service sends (read, and search by `patient`, `code` and `combo-code`
token lists and `_sort=-date`) and records every request so tests can assert where the bearer token went.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
import responses

FHIR_JSON = "application/fhir+json"


def _codes(resource: dict[str, Any]) -> set[str]:
    codings = (resource.get("code") or {}).get("coding") or []
    return {f"{c.get('system')}|{c.get('code')}" for c in codings}


def _combo_codes(resource: dict[str, Any]) -> set[str]:
    """`combo-code`: the codes of the Observation and of each of its components."""
    found = _codes(resource)
    for component in resource.get("component") or []:
        found |= _codes(component)
    return found


def _date(resource: dict[str, Any]) -> str:
    period = resource.get("effectivePeriod") or {}
    return str(resource.get("effectiveDateTime") or period.get("start") or "")


class MockFhirServer:
    def __init__(self, base_url: str, bundle: dict[str, Any], expected_token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.resources = [e["resource"] for e in bundle.get("entry", [])]
        self.expected_token = expected_token
        self.calls: list[requests.PreparedRequest] = []

    def register(self, rsps: responses.RequestsMock) -> None:
        rsps.add_callback(responses.GET, re.compile(re.escape(self.base_url) + r"/.*"), callback=self._answer)

    def _answer(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.calls.append(request)
        headers = {"Content-Type": FHIR_JSON}
        if (
            self.expected_token is not None
            and request.headers.get("Authorization") != f"Bearer {self.expected_token}"
        ):
            return 401, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
        url = urlsplit(str(request.url))
        path = url.path[len(urlsplit(self.base_url).path) :].strip("/")
        if path == "metadata":
            return 200, headers, json.dumps({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
        parts = path.split("/")
        if len(parts) == 2:
            found = [r for r in self.resources if r["resourceType"] == parts[0] and r.get("id") == parts[1]]
            if not found:
                return 404, headers, json.dumps({"resourceType": "OperationOutcome", "issue": []})
            return 200, headers, json.dumps(found[0])
        query = parse_qs(url.query)
        matches = [r for r in self.resources if r["resourceType"] == parts[0]]
        if "patient" in query:
            pid = query["patient"][0]
            matches = [
                r
                for r in matches
                if ((r.get("subject") or r.get("patient") or {}).get("reference") == f"Patient/{pid}")
            ]
        if "code" in query:
            wanted = set(query["code"][0].split(","))
            matches = [r for r in matches if _codes(r) & wanted]
        if "combo-code" in query:
            wanted = set(query["combo-code"][0].split(","))
            matches = [r for r in matches if _combo_codes(r) & wanted]
        if query.get("_sort") == ["-date"]:
            matches.sort(key=_date, reverse=True)
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(matches),
            "entry": [
                {"fullUrl": f"{self.base_url}/{r['resourceType']}/{r['id']}", "resource": r} for r in matches
            ],
        }
        return 200, headers, json.dumps(bundle)
