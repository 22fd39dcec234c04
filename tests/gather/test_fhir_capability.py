"""Capability-aware fetching: the CapabilityStatement is read once per server (TTL), queries are shaped to
it, an unsupported category is "not available" (not a 412), and the per-key failure policy `omit`."""

from __future__ import annotations

import time
from typing import Any

import pytest
import responses
from responses import matchers

from cds_service.core.errors import DataUnavailable
from cds_service.gather.capability import UNKNOWN, CapabilityCache, parse_capability_statement
from cds_service.gather.medication_fetch import fetch_missing_medications
from cds_service.gather.prefetch import resolve_prefetch
from cds_service.gather.query_shape import newest_first, shape_query
from cds_service.gather.refusal import issue_code
from tests.gather.test_prefetch import BASE, PATIENT, TEMPLATES, bundle, full_prefetch, make_client, resource
from tests.support.http_mocks import fresh_metadata_cache_fixture, rsps_fixture  # noqa: F401 - fixtures

ORACLE_LIKE: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "fhirVersion": "4.0.1",
    "rest": [
        {
            "mode": "server",
            "searchParam": [{"name": "_count", "type": "number"}],
            "resource": [
                {"type": "Patient", "interaction": [{"code": "read"}, {"code": "search-type"}]},
                {
                    "type": "Observation",
                    "interaction": [{"code": "read"}, {"code": "search-type"}],
                    "searchParam": [{"name": "patient"}, {"name": "code"}, {"name": "date"}],
                },
                {
                    "type": "Condition",
                    "interaction": [{"code": "search-type"}],
                    "searchParam": [{"name": "subject"}],
                },
                {"type": "AllergyIntolerance", "interaction": [{"code": "search-type"}]},
                {"type": "Procedure", "interaction": [{"code": "read"}]},
            ],
        }
    ],
}
CAPABILITIES = parse_capability_statement(ORACLE_LIKE)


# -- parsing and shaping (pure) -----------------------------------------------------------------------------


def test_a_statement_without_resources_says_nothing() -> None:
    assert (
        parse_capability_statement({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}) is UNKNOWN
    )
    assert (
        parse_capability_statement({"rest": [{"mode": "client", "resource": [{"type": "Patient"}]}]})
        is UNKNOWN
    )
    assert shape_query("MedicationStatement?patient=p&_sort=-date", UNKNOWN).url == (
        "MedicationStatement?patient=p&_sort=-date"
    )


@pytest.mark.parametrize(
    ("query", "url", "sort_locally"),
    [
        ("Patient/p1", "Patient/p1", False),
        (
            "Observation?patient=p1&combo-code=http://loinc.org|38263-7&_sort=-date",
            "Observation?patient=p1",
            True,
        ),
        ("Observation?patient=p1&code=http://loinc.org|2951-2&_count=50", None, False),
        ("Condition?patient=p1", "Condition?subject=Patient/p1", False),
        ("AllergyIntolerance?patient=p1", "AllergyIntolerance?patient=p1", False),  # no params declared
    ],
)
def test_queries_are_shaped_to_what_the_server_declares(
    query: str, url: str | None, sort_locally: bool
) -> None:
    shaped = shape_query(query, CAPABILITIES)
    if url is None:  # the declared params are kept as they are
        assert shaped.url == "Observation?patient=p1&code=http://loinc.org|2951-2&_count=50"
    else:
        assert (shaped.url, shaped.sort_locally) == (url, sort_locally)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (
            "MedicationStatement?patient=p1",
            "MedicationStatement is not in the FHIR server's CapabilityStatement",
        ),
        ("Procedure?patient=p1", "Procedure search is not supported by the FHIR server"),
        ("Condition/c1", "Condition read is not supported by the FHIR server"),
    ],
)
def test_an_unsupported_query_is_not_sent(query: str, reason: str) -> None:
    shaped = shape_query(query, CAPABILITIES)
    assert (shaped.url, shaped.reason) == (None, reason)


def test_a_search_without_patient_or_subject_is_not_sent() -> None:
    statement = {
        "rest": [
            {
                "resource": [
                    {
                        "type": "Device",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [{"name": "type"}],
                    }
                ]
            }
        ]
    }
    shaped = shape_query("Device?patient=p1", parse_capability_statement(statement))
    assert shaped.url is None and "cannot be searched by patient" in shaped.reason


def test_local_sort_is_newest_first_with_undated_last() -> None:
    entries = [
        {"resource": {"id": "a", "effectiveDateTime": "2020-01-01"}},
        {"resource": {"id": "b"}},
        {"resource": {"id": "c", "effectivePeriod": {"start": "2023-05-01"}}},
        {"resource": {"id": "d", "issued": "2021-07-01T10:00:00Z"}},
    ]
    assert [e["resource"]["id"] for e in newest_first(entries)] == ["c", "d", "a", "b"]


def test_the_cache_forgets_a_server_after_its_ttl() -> None:
    now = [0.0]
    cache = CapabilityCache(ttl_s=60, clock=lambda: now[0])
    cache.put(BASE, CAPABILITIES)
    now[0] = 59.9
    assert cache.get(BASE) is CAPABILITIES
    now[0] = 60.0
    assert cache.get(BASE) is None


def test_only_a_plain_issue_code_is_taken_from_a_refusal() -> None:
    outcome = (
        b'{"resourceType": "OperationOutcome", "issue": [{"code": "not-supported", "diagnostics": "pat-42"}]}'
    )
    assert issue_code(outcome) == "not-supported"
    assert issue_code(b'{"resourceType": "OperationOutcome", "issue": [{"code": "Patient pat-42"}]}') is None
    assert issue_code(b"<html>") is None


# -- resolution against a mocked server ---------------------------------------------------------------------


def _serve_statement(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json=ORACLE_LIKE)


def _without(*keys: str) -> dict[str, Any]:
    supplied = full_prefetch()
    for key in keys:
        del supplied[key]
    return supplied


def test_unsupported_categories_are_not_available_and_never_queried(rsps: responses.RequestsMock) -> None:
    _serve_statement(rsps)
    newer = resource("Observation", "o2", effectiveDateTime="2024-01-01")
    older = resource("Observation", "o1", effectiveDateTime="2020-01-01")
    rsps.add(
        responses.GET,
        f"{BASE}/Observation",
        match=[matchers.query_string_matcher(f"patient={PATIENT}")],
        json=bundle(older, newer),
    )
    record = resolve_prefetch(
        TEMPLATES, _without("dxa", "labs", "medicationStatements"), PATIENT, make_client()
    )
    assert record.unavailable == {
        "medicationStatements": "MedicationStatement is not in the FHIR server's CapabilityStatement"
    }
    assert record.resources["medicationStatements"] == []
    # dxa and labs became the same patient-only search, sent once and sorted here (no `_sort`).
    assert [r["id"] for r in record.resources["dxa"]] == ["o2", "o1"]
    assert record.resources["labs"] == record.resources["dxa"]
    assert record.fetched_keys == ("dxa", "labs")
    assert [call.request.url.split("?")[0] for call in rsps.calls] == [
        f"{BASE}/metadata",
        f"{BASE}/Observation",
    ]


def test_the_statement_is_read_once_per_server(rsps: responses.RequestsMock) -> None:
    _serve_statement(rsps)
    rsps.add(responses.GET, f"{BASE}/AllergyIntolerance", json=bundle())
    for _ in range(3):
        resolve_prefetch(TEMPLATES, _without("allergies"), PATIENT, make_client())
    assert sum(call.request.url.endswith("/metadata") for call in rsps.calls) == 1


def test_a_statement_listing_no_resources_leaves_the_queries_as_built(rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )
    rsps.add(responses.GET, f"{BASE}/MedicationStatement", json=bundle(resource("MedicationStatement", "m1")))
    record = resolve_prefetch(TEMPLATES, _without("medicationStatements"), PATIENT, make_client())
    assert [r["id"] for r in record.resources["medicationStatements"]] == ["m1"]
    assert record.unavailable == {}


def test_an_unreadable_statement_is_412_naming_the_server(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", status=404)
    with pytest.raises(DataUnavailable) as raised:
        resolve_prefetch(TEMPLATES, _without("medicationStatements"), PATIENT, make_client())
    assert raised.value.issues[0].expression == ("fhirServer",)
    assert len(rsps.calls) == 1  # no query was sent


def _refuse_allergies(rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )
    refusal = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}
    rsps.add(responses.GET, f"{BASE}/AllergyIntolerance", status=403, json=refusal)


def test_policy_fail_answers_412_naming_the_key_and_why(rsps: responses.RequestsMock) -> None:
    _refuse_allergies(rsps)
    with pytest.raises(DataUnavailable) as raised:
        resolve_prefetch(TEMPLATES, _without("allergies"), PATIENT, make_client())
    issue = raised.value.issues[0]
    assert issue.expression == ("prefetch.allergies",)
    assert (
        issue.diagnostics == "The FHIR server answered HTTP 403 (forbidden) to a AllergyIntolerance request"
    )


def test_policy_omit_makes_the_key_not_available(rsps: responses.RequestsMock) -> None:
    _refuse_allergies(rsps)
    record = resolve_prefetch(
        TEMPLATES, _without("allergies"), PATIENT, make_client(), omit_keys={"allergies"}
    )
    assert record.unavailable == {
        "allergies": "The FHIR server answered HTTP 403 (forbidden) to a AllergyIntolerance request"
    }
    assert record.resources["allergies"] == []
    assert record.fetched_keys == ()


def test_policy_omit_without_a_fhir_server() -> None:
    record = resolve_prefetch(
        TEMPLATES, _without("allergies"), PATIENT, None, "no server", omit_keys={"allergies"}
    )
    assert record.unavailable == {"allergies": "missing or incomplete and no server"}
    with pytest.raises(DataUnavailable):
        resolve_prefetch(TEMPLATES, _without("allergies", "labs"), PATIENT, None, omit_keys={"allergies"})


def test_a_paged_prefetch_that_cannot_be_completed_is_dropped_whole_under_omit(
    rsps: responses.RequestsMock,
) -> None:
    supplied = full_prefetch()
    supplied["allergies"] = bundle(
        resource("AllergyIntolerance", "a1"), next_url=f"{BASE}/AllergyIntolerance?page=2"
    )
    rsps.add(
        responses.GET,
        f"{BASE}/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )
    rsps.add(responses.GET, f"{BASE}/AllergyIntolerance", status=500)
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client(), omit_keys={"allergies"})
    assert record.resources["allergies"] == []  # never the first page alone
    assert "HTTP 500" in record.unavailable["allergies"]


# -- referenced Medications ----------------------------------------------------------------------------------


def _use(reference: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": reference},
    }


def test_medications_are_read_one_by_one_where_id_search_is_not_offered(rsps: responses.RequestsMock) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "resource": [
                    {
                        "type": "Medication",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": [{"name": "code"}],
                    }
                ]
            }
        ],
    }
    rsps.add(responses.GET, f"{BASE}/metadata", json=statement)
    rsps.add(responses.GET, f"{BASE}/Medication/m1", json=resource("Medication", "m1"))
    rsps.add(responses.GET, f"{BASE}/Medication/m2", json=resource("Medication", "m2"))
    found = fetch_missing_medications(
        make_client(), [_use("Medication/m1"), {**_use(f"{BASE}/Medication/m2"), "id": "r2"}]
    )
    assert sorted(m["id"] for m in found) == ["m1", "m2"]


def test_medications_are_not_asked_of_a_server_without_them(rsps: responses.RequestsMock) -> None:
    _serve_statement(rsps)
    assert fetch_missing_medications(make_client(), [_use("Medication/m1")]) == []
    assert [call.request.url for call in rsps.calls] == [f"{BASE}/metadata"]


def test_declared_medication_include_brings_the_medications_in_the_same_round(
    rsps: responses.RequestsMock,
) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "resource": [
                    {
                        "type": "MedicationRequest",
                        "interaction": [{"code": "search-type"}],
                        "searchParam": [{"name": "patient"}],
                        "searchInclude": ["MedicationRequest:medication"],
                    },
                    {"type": "Medication", "interaction": [{"code": "read"}, {"code": "search-type"}]},
                ]
            }
        ],
    }
    rsps.add(responses.GET, f"{BASE}/metadata", json=statement)
    order = {**_use("Medication/m1"), "subject": {"reference": f"Patient/{PATIENT}"}}
    found = bundle(order, resource("Medication", "m1"))
    rsps.add(
        responses.GET,
        f"{BASE}/MedicationRequest",
        match=[matchers.query_string_matcher(f"patient={PATIENT}&_include=MedicationRequest:medication")],
        json=found,
    )
    client = make_client()
    record = resolve_prefetch(TEMPLATES, _without("medicationRequests"), PATIENT, client)
    resources = record.resources["medicationRequests"]
    assert [r["resourceType"] for r in resources] == ["MedicationRequest", "Medication"]
    assert fetch_missing_medications(client, resources) == []  # nothing left to fetch: no second round
    assert len(rsps.calls) == 2


def test_running_out_of_time_is_412_even_under_omit(rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/metadata",
        json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"},
    )

    def slow(_: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(0.6)
        return 200, {}, '{"resourceType": "Bundle"}'

    rsps.add_callback(responses.GET, f"{BASE}/AllergyIntolerance", callback=slow)
    with pytest.raises(DataUnavailable, match="deadline"):
        resolve_prefetch(
            TEMPLATES, _without("allergies"), PATIENT, make_client(deadline_s=0.3), omit_keys={"allergies"}
        )
