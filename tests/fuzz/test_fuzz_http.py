"""Fuzz: malformed but schema-plausible data through the HTTP app never gives a 5xx.

Every call answers 200 (the bad entry ignored or counted as unreadable, with caveats) or a clear 4xx/412
with an OperationOutcome. Cases: the fixed corpus (tests/fuzz/corpus.py) via prefetch, hypothesis-generated
resources via prefetch (GENERATED_EXAMPLES, fixed seed), and a corpus sample via the mocked FHIR server.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import responses
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.corpus import CORPUS, PID, malformed_resources
from tests.metamorphic.paths import (
    FHIR_BASE,
    TOKEN,
    URL,
    PagingFhirServer,
    http_client,
    plain_session,
    prefetch_groups,
)
from tests.metamorphic.scenarios import scenario_record
from tests.metamorphic.transforms import Record
from tests.support.fixtures import hook_request_for_bundle

GENERATED_EXAMPLES = 150
ACCEPTED_4XX = frozenset({400, 412, 413, 422})
MOCK_SERVER_SAMPLE = [
    "status as list",
    "T-score 1e30",
    "date 0001-01-01",
    "period end 9999-12-31",
    "medicationReference dangling",
    "medicationReference contained self-cycle",
    "hasMember loop",
    "deeply nested extension",
]


def _base_prefetch() -> dict[str, Any]:
    record = scenario_record(PID)
    prefetch: dict[str, Any] = {"patient": copy.deepcopy(record.patient())}
    for key, group in prefetch_groups(record).items():
        prefetch[key] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": copy.deepcopy(r)} for r in group],
        }
    return prefetch


def _request_with(key: str, value: Any) -> dict[str, Any]:
    prefetch = _base_prefetch()
    if key == "patient":
        prefetch["patient"] = value
    else:
        prefetch[key]["entry"].append({"resource": value})
    return {
        "hook": "patient-view",
        "hookInstance": "5d0c8f0e-1f0a-4c1e-9c0e-7a3f2b1c0d9e",
        "context": {"userId": "Practitioner/demo-1", "patientId": PID},
        "prefetch": prefetch,
    }


def check_answer(name: str, status: int, body: Any) -> None:
    assert status < 500, f"fuzz case {name!r}: HTTP {status} {str(body)[:300]}"
    if status == 200:
        assert isinstance(body, dict) and isinstance(body.get("cards"), list), f"{name!r}: {str(body)[:300]}"
    else:
        assert status in ACCEPTED_4XX, f"fuzz case {name!r}: unexpected HTTP {status}"
        assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", f"{name!r}: {body}"


def post_prefetch(name: str, key: str, value: Any) -> None:
    client = http_client("2025-06-01")
    response = client.post(URL, data=json.dumps(_request_with(key, value)), content_type="application/json")
    check_answer(name, response.status_code, response.get_json(silent=True))


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(("name", "key", "value"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_case_via_prefetch_never_5xx(name: str, key: str, value: Any) -> None:
    post_prefetch(name, key, value)


@pytest.mark.protocol("3c-implausible")
@settings(
    max_examples=GENERATED_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=malformed_resources())
def test_generated_case_via_prefetch_never_5xx(case: tuple[str, str, Any]) -> None:
    post_prefetch(*case)


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    ("name", "key", "value"), [c for c in CORPUS if c[0] in MOCK_SERVER_SAMPLE], ids=MOCK_SERVER_SAMPLE
)
def test_corpus_case_via_mocked_fhir_server_never_5xx(name: str, key: str, value: Any) -> None:
    record = scenario_record(PID)
    record = Record((*record.resources, value))
    server = PagingFhirServer(record)
    request = hook_request_for_bundle(
        {
            "entry": [
                {"resource": r}
                for r in record.resources
                if isinstance(r, dict) and r.get("resourceType") == "Patient"
            ]
        },
        with_prefetch=False,
        fhir_server=FHIR_BASE,
        access_token=TOKEN,
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, plain_session():
        server.register(rsps)
        response = http_client("2025-06-01").post(URL, json=request)
    assert server.calls, "the record was fetched from the mocked FHIR server"
    check_answer(name, response.status_code, response.get_json(silent=True))


def test_case_count() -> None:
    """The figure for the closing note: corpus + generated + mocked-server cases."""
    assert len(CORPUS) >= 60 and len(MOCK_SERVER_SAMPLE) == 8
    assert len({c[0] for c in CORPUS}) == len(CORPUS), "corpus case names are unique"
