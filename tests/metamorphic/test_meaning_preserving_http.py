"""A fixed sample of transformed records through the real HTTP app: via prefetch (paged where the transform
pages, with the mocked FHIR server completing the pages and serving server-only Medications), via the mocked
FHIR server without prefetch, and via the real FHIR server process (marker fhir_server).

Each call must give the decision of the UNTRANSFORMED record through the offline evaluator: the operator log
line (outcome, rule, warnings) always, and the deciding fields of the card's decision object when there is a
card.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.metamorphic.compare import differences, failure_message
from tests.metamorphic.paths import (
    URL,
    HttpDecision,
    as_bundle,
    decide_offline,
    decide_via_mock_server,
    decide_via_prefetch,
    decision_log,
)
from tests.metamorphic.scenarios import AS_OF, scenario_record, seeded
from tests.metamorphic.transforms import BY_NAME, Record, Transform, compose
from tests.support.app_settings import test_settings
from tests.support.fhir_server import FhirServerProcess
from tests.support.fixtures import hook_request_for_bundle

# (scenario, transforms): every transform at least once, on a scenario where it changes the record.
SAMPLE: list[tuple[str, tuple[str, ...]]] = [
    ("s01", ("epic_medication_reference",)),
    ("s10", ("contained_medication",)),
    ("s28", ("server_medication_reference",)),
    ("s12", ("injection_as_statement",)),
    ("s47", ("injection_as_dispense",)),
    ("s52", ("statement_as_order",)),
    ("s09", ("dispense_as_dispensed_order",)),
    ("s25", ("epic_dxa_panel",)),
    ("s39", ("values_as_strings",)),
    ("s39", ("lab_comparators",)),
    ("s15", ("equivalent_condition_codes",)),
    ("s31", ("duplicate_second_source",)),
    ("s47", ("offset_datetimes",)),
    ("s13", ("entered_in_error_twins",)),
    ("s05", ("unrelated_noise",)),
    ("s33", ("shuffled_order", "renamed_ids")),
    ("s01", ("paged_searches",)),
    ("s12", ("paged_searches", "duplicate_second_source")),
    ("s52", ("paged_searches", "unrelated_noise", "renamed_ids")),
    ("s55", ("paged_searches", "offset_datetimes")),
]
REAL_SERVER_SAMPLE: list[tuple[str, tuple[str, ...]]] = [
    ("s01", ("renamed_ids", "unrelated_noise")),
    ("s12", ("injection_as_statement",)),
    ("s15", ("equivalent_condition_codes",)),
    ("s47", ("offset_datetimes", "duplicate_second_source")),
    ("s10", ("contained_medication",)),
    ("s25", ("epic_dxa_panel",)),
    ("s28", ("server_medication_reference",)),
]


def _case_id(case: tuple[str, tuple[str, ...]]) -> str:
    return f"{case[0]}-{'+'.join(case[1])}"


def _transformed(scenario_id: str, names: tuple[str, ...]) -> tuple[Transform, Record]:
    transform = compose([BY_NAME[name] for name in names])
    return transform, transform(scenario_record(scenario_id), seeded(scenario_id, transform.name, "http"))


def check_http(transform: Transform, scenario_id: str, path: str, http: HttpDecision) -> None:
    baseline = decide_offline(scenario_record(scenario_id), AS_OF[scenario_id])
    logged = http.logged
    want = (baseline["outcome"], baseline["rule"], sorted(baseline["warnings"]))
    got = (logged["outcome"], logged["rule"], sorted(logged["warnings"]))
    assert got == want, failure_message(
        transform.name, scenario_id, path, [f"log line: expected {want}, got {got}"]
    )
    if http.card_decision is not None:
        diffs = differences(baseline, http.card_decision, strict=transform.kind == "syntactic")
        assert not diffs, failure_message(transform.name, scenario_id, path, diffs)


@pytest.mark.protocol("3c-medication-reference", "3c-panels", "3c-comparators", "3c-duplicates", "3b-dates")
@pytest.mark.parametrize("case", SAMPLE, ids=_case_id)
def test_transformed_record_via_prefetch(case: tuple[str, tuple[str, ...]]) -> None:
    scenario_id, names = case
    transform, record = _transformed(scenario_id, names)
    http = decide_via_prefetch(record, AS_OF[scenario_id])
    if record.page_size is None and not record.server_only:
        assert http.fhir_calls == 0, (
            f"{transform.name} x {scenario_id}: a complete prefetch needs no FHIR call"
        )
    else:
        assert http.fhir_calls > 0, (
            f"{transform.name} x {scenario_id}: pages/server-only data were not fetched"
        )
    check_http(transform, scenario_id, "prefetch", http)


@pytest.mark.protocol("3c-medication-reference", "3c-panels", "3c-comparators", "3c-duplicates", "3b-dates")
@pytest.mark.parametrize("case", SAMPLE, ids=_case_id)
def test_transformed_record_via_mocked_fhir_server(case: tuple[str, tuple[str, ...]]) -> None:
    scenario_id, names = case
    transform, record = _transformed(scenario_id, names)
    check_http(
        transform, scenario_id, "mocked FHIR server", decide_via_mock_server(record, AS_OF[scenario_id])
    )


# ---------------------------------------------------------------------------------------------------------
# Real FHIR server process
# ---------------------------------------------------------------------------------------------------------


def _prefixed(record: Record, prefix: str) -> Record:
    """Unique ids per case on the shared real server (references kept consistent)."""
    mapping = {
        f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{prefix}-{r['id']}"
        for r in record.all_resources()
    }

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: rename(v) for k, v in value.items()}
            if isinstance(out.get("reference"), str) and out["reference"] in mapping:
                out["reference"] = mapping[out["reference"]]
            return out
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    def renamed(resources: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        return tuple({**rename(r), "id": f"{prefix}-{r['id']}"[:64]} for r in resources)

    return Record(renamed(record.resources), renamed(record.server_only), record.page_size)


@pytest.fixture(scope="module")
def real_client() -> Iterator[FlaskClient]:
    from cds_service.app import create_app

    settings = test_settings(
        {"CDS_AS_OF": "2025-06-01", "CDS_FHIR_DEADLINE_S": "20", "CDS_FHIR_READ_TIMEOUT_S": "15"}
    )
    # Idle keep-alive connections are left in the shared pool on purpose: the Node server closes them after
    # its keep-alive timeout, and the service must survive a close that crosses a request (stale_retry).
    yield create_app(settings).test_client()


@pytest.mark.fhir_server
@pytest.mark.protocol("3c-medication-reference", "3c-panels", "3c-duplicates", "3b-dates", "3b-icd-category")
@pytest.mark.parametrize("case", REAL_SERVER_SAMPLE, ids=_case_id)
def test_transformed_record_via_real_fhir_server(
    fhir_server: FhirServerProcess, real_client: FlaskClient, case: tuple[str, tuple[str, ...]]
) -> None:
    scenario_id, names = case
    transform, record = _transformed(scenario_id, names)
    record = _prefixed(record, f"mm{SAMPLE_INDEX[_case_id(case)]}")
    fhir_server.load(as_bundle(record, "transaction"))
    request = hook_request_for_bundle(
        as_bundle(record), with_prefetch=False, fhir_server=fhir_server.base_url, access_token="real-token-mm"
    )
    with decision_log() as log:
        response = real_client.post(URL, json=request)
    cards = (response.get_json() or {}).get("cards", [])
    http = HttpDecision(
        log.fields[0] if log.fields else {},
        cards[0]["extension"]["osteo-cds/decision"] if cards else None,
    )
    assert response.status_code == 200, f"{transform.name} x {scenario_id}: HTTP {response.status_code}"
    check_http(transform, scenario_id, "real FHIR server", http)


SAMPLE_INDEX = {_case_id(case): index for index, case in enumerate(REAL_SERVER_SAMPLE)}
