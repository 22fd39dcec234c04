"""Prefetch templates and resolution: supplied / null / absent / OperationOutcome / paged / DSTU2 rules."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from cds_service.core.errors import BadRequest, DataUnavailable, NotR4Server
from cds_service.gather.client import FhirClient
from cds_service.gather.prefetch import (
    PATIENT_ID_TOKEN,
    PREFETCH_RESOURCE_TYPES,
    build_prefetch_templates,
    resolve_prefetch,
    substitute,
)
from tests.support.http_mocks import fresh_metadata_cache_fixture, rsps_fixture  # noqa: F401 - fixtures

BASE = "https://fhir.example.org/r4"
OTHER = "https://elsewhere.example.com/r4"
TOKEN = "secret-token-abc123"
PATIENT = "pat-42"
LOINC = "http://loinc.org"
DXA_CODES = [(LOINC, "38263-7"), (LOINC, "80948-3")]
LAB_CODES = [(LOINC, "2951-2")]
TEMPLATES = build_prefetch_templates(DXA_CODES, LAB_CODES)
SEARCH_TYPES = {key: t for key, t in PREFETCH_RESOURCE_TYPES.items() if key != "patient"}


def make_client(**overrides: Any) -> FhirClient:
    options: dict[str, Any] = {"connect_timeout": 1.0, "read_timeout": 2.0, "deadline_s": 5.0, "max_pages": 3}
    options.update(overrides)
    return FhirClient(BASE, TOKEN, **options)


def add_metadata(rsps: responses.RequestsMock, version: str = "4.0.1") -> responses.BaseResponse:
    body = {"resourceType": "CapabilityStatement", "fhirVersion": version}
    return rsps.add(responses.GET, f"{BASE}/metadata", json=body)


def resource(resource_type: str, resource_id: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": resource_type, "id": resource_id, **fields}


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    links = [{"relation": "next", "url": next_url}] if next_url else []
    entries = [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r} for r in resources]
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def full_prefetch() -> dict[str, Any]:
    """Every key supplied: the patient as a resource, each search as a one-entry Bundle."""
    supplied: dict[str, Any] = {"patient": resource("Patient", PATIENT)}
    for key, resource_type in SEARCH_TYPES.items():
        supplied[key] = bundle(resource(resource_type, f"{key}-1"))
    return supplied


def search_match(resource_type: str) -> dict[str, Any]:
    """A responses registration for `<Type>?patient=PATIENT...` carrying the bearer token."""
    return {
        "url": f"{BASE}/{resource_type}",
        "match": [
            matchers.query_param_matcher({"patient": PATIENT}, strict_match=False),
            matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"}),
        ],
    }


# --- templates --------------------------------------------------------------------------------------------


def test_templates_have_the_fixed_keys_and_shapes() -> None:
    assert list(TEMPLATES) == list(PREFETCH_RESOURCE_TYPES)
    assert TEMPLATES["patient"] == "Patient/{{context.patientId}}"
    assert TEMPLATES["dxa"] == (
        "Observation?patient={{context.patientId}}"
        "&combo-code=http://loinc.org|38263-7,http://loinc.org|80948-3&_sort=-date"
    )
    assert (
        TEMPLATES["labs"]
        == "Observation?patient={{context.patientId}}&combo-code=http://loinc.org|2951-2&_sort=-date"
    )
    assert TEMPLATES["conditions"] == "Condition?patient={{context.patientId}}"
    assert TEMPLATES["medicationDispenses"] == "MedicationDispense?patient={{context.patientId}}"
    for key, template in TEMPLATES.items():
        assert template.startswith(PREFETCH_RESOURCE_TYPES[key])
        assert template.count("{{") == 1
        assert PATIENT_ID_TOKEN in template
    for key in (
        "medicationStatements",
        "medicationRequests",
        "medicationAdministrations",
        "medicationDispenses",
    ):
        assert "code=" not in TEMPLATES[key]


def test_template_codes_are_deduplicated_in_order_and_encoded() -> None:
    codes = [(LOINC, "b"), ("urn:oid:1.2.3", "a b&c"), (LOINC, "b"), ("http://x.org/cs", "x,y|z$w\\v")]
    template = build_prefetch_templates(codes, LAB_CODES)["dxa"]
    code_param = template.split("&combo-code=")[1].split("&_sort")[0]
    assert code_param == (
        "http://loinc.org|b,urn:oid:1.2.3|a%20b%26c,http://x.org/cs|x%5C%2Cy%5C%7Cz%5C%24w%5C%5Cv"
    )


@pytest.mark.parametrize("codes", [[], [("", "1")], [(LOINC, "")]])
def test_template_codes_must_be_usable(codes: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="dxa"):
        build_prefetch_templates(codes, LAB_CODES)


def test_substitute_url_encodes_the_patient_id() -> None:
    assert substitute(TEMPLATES["conditions"], "a b&c/d") == "Condition?patient=a%20b%26c%2Fd"
    with pytest.raises(ValueError, match="token"):
        substitute("Condition?patient={{context.encounterId}}", PATIENT)


# --- supplied values --------------------------------------------------------------------------------------


def test_supplied_values_are_used_unchanged_without_a_server() -> None:
    supplied = full_prefetch()
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, None)
    assert record.fetched_keys == ()
    assert record.pages_fetched == 0
    assert record.resources["patient"][0] is supplied["patient"]
    assert record.full_urls["patient"] == [None]
    assert record.resources["dxa"][0] is supplied["dxa"]["entry"][0]["resource"]
    assert record.full_urls["dxa"] == [f"{BASE}/Observation/dxa-1"]
    assert list(record.resources) == list(TEMPLATES)


def test_null_means_no_data_and_is_never_requeried(rsps: responses.RequestsMock) -> None:
    supplied = {**full_prefetch(), "dxa": None, "patient": None}
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert record.resources["dxa"] == []
    assert record.resources["patient"] == []
    assert record.fetched_keys == ()
    assert len(rsps.calls) == 0


def test_absent_key_is_fetched_alone(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, **search_match("Condition"), json=bundle(resource("Condition", "c9")))
    supplied = full_prefetch()
    del supplied["conditions"]
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert [r["id"] for r in record.resources["conditions"]] == ["c9"]
    assert record.full_urls["conditions"] == [f"{BASE}/Condition/c9"]
    assert record.fetched_keys == ("conditions",)
    assert record.pages_fetched == 1
    assert sorted(str(c.request.url).split("?")[0] for c in rsps.calls) == [
        f"{BASE}/Condition",
        f"{BASE}/metadata",
    ]


def test_operation_outcome_value_is_refetched(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, **search_match("Procedure"), json=bundle(resource("Procedure", "p1")))
    supplied = {**full_prefetch(), "procedures": {"resourceType": "OperationOutcome", "issue": []}}
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert [r["id"] for r in record.resources["procedures"]] == ["p1"]
    assert record.fetched_keys == ("procedures",)


def test_operation_outcome_entries_are_dropped() -> None:
    conditions = bundle(resource("Condition", "c1"))
    conditions["entry"] += [
        {"resource": {"resourceType": "OperationOutcome", "issue": [{"code": "informational"}]}},
        {"resource": resource("Condition", "c-outcome"), "search": {"mode": "outcome"}},
    ]
    record = resolve_prefetch(TEMPLATES, {**full_prefetch(), "conditions": conditions}, PATIENT, None)
    assert [r["id"] for r in record.resources["conditions"]] == ["c1"]


def test_duplicates_are_kept_for_the_parse_layer() -> None:
    dup = resource("Observation", "o1")
    record = resolve_prefetch(TEMPLATES, {**full_prefetch(), "dxa": bundle(dup, dup)}, PATIENT, None)
    assert len(record.resources["dxa"]) == 2


def test_no_prefetch_at_all_fetches_every_key_with_encoded_patient_id(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    patient_id = "a b"
    rsps.add(responses.GET, f"{BASE}/Patient/a%20b", json=resource("Patient", patient_id))
    for resource_type in set(SEARCH_TYPES.values()):
        match = [matchers.query_param_matcher({"patient": patient_id}, strict_match=False)]
        rsps.add(responses.GET, f"{BASE}/{resource_type}", json=bundle(), match=match)
    record = resolve_prefetch(TEMPLATES, None, patient_id, make_client())
    assert record.fetched_keys == tuple(TEMPLATES)
    assert record.resources["patient"][0]["id"] == patient_id
    assert record.pages_fetched == len(TEMPLATES)
    dxa_call = next(c for c in rsps.calls if "38263-7" in str(c.request.url))
    assert "_sort=-date" in str(dxa_call.request.url)


@pytest.mark.parametrize("value", [[], "Bundle", 3, {"entry": []}, {"response": {}, "resource": {}}])
def test_malformed_values_are_bad_requests(value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        resolve_prefetch(TEMPLATES, {**full_prefetch(), "labs": value}, PATIENT, None)
    assert caught.value.issues[0].expression == ("prefetch.labs",)


# --- paging of prefetched Bundles -------------------------------------------------------------------------


def test_prefetched_bundle_is_completed_from_the_server(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(
        responses.GET,
        f"{BASE}/Observation?page=2",
        json=bundle(resource("Observation", "o2")),
        match=[matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})],
    )
    paged = bundle(resource("Observation", "o1"), next_url=f"{BASE}/Observation?page=2")
    record = resolve_prefetch(TEMPLATES, {**full_prefetch(), "dxa": paged}, PATIENT, make_client())
    assert [r["id"] for r in record.resources["dxa"]] == ["o1", "o2"]
    assert record.full_urls["dxa"] == [f"{BASE}/Observation/o1", f"{BASE}/Observation/o2"]
    assert record.pages_fetched == 1
    assert record.fetched_keys == ()


def test_next_link_on_another_origin_is_412_and_not_requested(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    other = rsps.add(responses.GET, f"{OTHER}/Observation", json=bundle())
    paged = bundle(resource("Observation", "o1"), next_url=f"{OTHER}/Observation?page=2")
    with pytest.raises(DataUnavailable) as caught:
        resolve_prefetch(TEMPLATES, {**full_prefetch(), "dxa": paged}, PATIENT, make_client())
    assert caught.value.status == 412
    assert caught.value.issues[0].expression == ("prefetch.dxa",)
    assert other.call_count == 0


def test_page_cap_is_412(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Observation?page=2", json=bundle(next_url=f"{BASE}/Observation?page=3"))
    paged = bundle(resource("Observation", "o1"), next_url=f"{BASE}/Observation?page=2")
    with pytest.raises(DataUnavailable, match="page cap") as caught:
        resolve_prefetch(TEMPLATES, {**full_prefetch(), "dxa": paged}, PATIENT, make_client(max_pages=2))
    assert caught.value.issues[0].expression == ("prefetch.dxa",)


def test_paged_bundle_without_a_server_is_412() -> None:
    paged = bundle(resource("Observation", "o1"), next_url=f"{BASE}/Observation?page=2")
    with pytest.raises(DataUnavailable) as caught:
        resolve_prefetch(TEMPLATES, {**full_prefetch(), "labs": paged}, PATIENT, None)
    assert caught.value.issues[0].expression == ("prefetch.labs",)


# --- failures ---------------------------------------------------------------------------------------------


def test_absent_key_without_a_server_is_412() -> None:
    supplied = full_prefetch()
    del supplied["allergies"]
    with pytest.raises(DataUnavailable) as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, None)
    assert caught.value.status == 412
    assert caught.value.issues[0].expression == ("prefetch.allergies",)


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500},
        {"status": 401},
        {"status": 404},
        {"body": requests.exceptions.ReadTimeout()},
        {"body": requests.exceptions.ConnectionError()},
    ],
)
def test_search_failures_are_412_naming_the_key(
    rsps: responses.RequestsMock, failure: dict[str, Any]
) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, **search_match("MedicationRequest"), **failure)
    supplied = full_prefetch()
    del supplied["medicationRequests"]
    with pytest.raises(DataUnavailable) as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert caught.value.status == 412
    assert caught.value.issues[0].expression == ("prefetch.medicationRequests",)


def test_patient_read_404_is_no_patient(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(
        responses.GET, f"{BASE}/Patient/{PATIENT}", status=404, json={"resourceType": "OperationOutcome"}
    )
    supplied = full_prefetch()
    del supplied["patient"]
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert record.resources["patient"] == []
    assert record.fetched_keys == ("patient",)


def test_patient_read_other_error_is_412(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)
    rsps.add(responses.GET, f"{BASE}/Patient/{PATIENT}", status=403)
    supplied = full_prefetch()
    del supplied["patient"]
    with pytest.raises(DataUnavailable) as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert caught.value.issues[0].expression == ("prefetch.patient",)


def test_non_r4_server_is_412_with_the_sandbox_hint(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, f"{BASE}/metadata", json={"resourceType": "Conformance", "fhirVersion": "1.0.2"})
    rsps.add(responses.GET, **search_match("Condition"), json=bundle())
    supplied = full_prefetch()
    del supplied["conditions"]
    with pytest.raises(NotR4Server) as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert caught.value.status == 412
    assert "?fhirServiceUrl=https://<your R4 server>" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("medicationRequests", bundle(resource("MedicationOrder", "mo1"))),
        ("medicationRequests", resource("MedicationOrder", "mo1")),
        ("conditions", bundle(resource("Condition", "c1", clinicalStatus="active"))),
        ("conditions", bundle(resource("Condition", "c1", verificationStatus="confirmed"))),
    ],
)
def test_dstu2_prefetch_is_412_before_any_fetch(rsps: responses.RequestsMock, key: str, value: Any) -> None:
    supplied = {**full_prefetch(), key: value}
    del supplied["dxa"]
    with pytest.raises(NotR4Server) as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert caught.value.status == 412
    assert caught.value.issues[0].expression == (f"prefetch.{key}",)
    assert "FHIR R4 is required" in str(caught.value)
    assert "?fhirServiceUrl=https://<your R4 server>" in str(caught.value)
    assert len(rsps.calls) == 0


def test_r4_condition_shape_is_accepted() -> None:
    status = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
    }
    conditions = bundle(resource("Condition", "c1", clinicalStatus=status))
    record = resolve_prefetch(TEMPLATES, {**full_prefetch(), "conditions": conditions}, PATIENT, None)
    assert record.resources["conditions"][0]["clinicalStatus"] is status


def test_missing_patient_id_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        resolve_prefetch(TEMPLATES, full_prefetch(), "", None)


# --- parallelism and deadline -----------------------------------------------------------------------------


def test_missing_keys_are_fetched_concurrently(rsps: responses.RequestsMock) -> None:
    # The CapabilityStatement is read first (it shapes the queries; cached per server), then the three
    # searches are all in flight together.
    barrier = threading.Barrier(3, timeout=2)

    def respond(body: str) -> Any:
        def callback(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            barrier.wait()
            return 200, {"Content-Type": "application/fhir+json"}, body

        return callback

    add_metadata(rsps)
    for resource_type in ("Condition", "Procedure", "AllergyIntolerance"):
        rsps.add_callback(
            responses.GET, **search_match(resource_type), callback=respond('{"resourceType": "Bundle"}')
        )
    supplied = full_prefetch()
    for key in ("conditions", "procedures", "allergies"):
        del supplied[key]
    record = resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client())
    assert record.fetched_keys == ("conditions", "procedures", "allergies")


def test_fetch_past_the_deadline_is_412(rsps: responses.RequestsMock) -> None:
    add_metadata(rsps)

    def slow(_: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        time.sleep(0.6)
        return 200, {}, '{"resourceType": "Bundle"}'

    rsps.add_callback(responses.GET, **search_match("Condition"), callback=slow)
    supplied = full_prefetch()
    del supplied["conditions"]
    with pytest.raises(DataUnavailable, match="deadline") as caught:
        resolve_prefetch(TEMPLATES, supplied, PATIENT, make_client(deadline_s=0.2))
    assert caught.value.issues[0].expression == ("prefetch.conditions",)


# --- the supplied-value check reads each Bundle once: the same entries as bundle_entries, same refusals ---

_ODD_ENTRIES: list[Any] = [
    "not an entry",
    {"fullUrl": "x"},
    {"resource": ["not", "a", "resource"]},
    {"resource": {"resourceType": "OperationOutcome"}},
    {"resource": {"resourceType": ["Condition"]}},
    {"resource": {"resourceType": "Observation"}, "search": {"mode": "outcome"}},
    {"resource": {"resourceType": "Observation"}, "search": "outcome"},
    {"resource": {"resourceType": "Observation"}, "search": {"mode": "match"}},
    {"resource": {"resourceType": "Condition", "clinicalStatus": {"text": "active"}}},
    {"resource": {"resourceType": "Condition", "clinicalStatus": "active"}, "search": {"mode": "outcome"}},
    {"resource": {"resourceType": "MedicationOrder"}, "search": {"mode": "outcome"}},
    {"resource": {"resourceType": "Condition", "verificationStatus": "confirmed"}},
    {"resource": {"resourceType": "MedicationOrder"}},
    {"resource": {"resourceType": "Observation"}, "search": {}},
    {"resource": {"resourceType": "Observation"}, "search": 0},
    {"resource": {"resourceType": "Observation"}, "search": ["outcome"]},
    {"resource": {"resourceType": "Observation"}, "search": None},
    {"resource": {"resourceType": "Condition"}},
    {
        "resource": {"resourceType": "Condition", "verificationStatus": {"coding": []}},
        "search": {"mode": "match"},
    },
    {"resource": {"resourceType": 7}},
    {"resource": {}},
]
# Entries the C-level pass takes as they are (no per-entry loop).
_PLAIN = [4, 7, 8, 13, 14, 16, 17, 18, 19, 20]


@pytest.mark.parametrize("seed", range(30))
def test_supplied_bundle_check_matches_bundle_entries_and_the_dstu2_refusal(seed: int) -> None:
    import random

    from cds_service.gather.bundles import bundle_entries
    from cds_service.gather.prefetch import _check_supplied, _dstu2_signal, _plain_entries

    rng = random.Random(seed)
    if seed % 2:
        entries = [rng.choice(_ODD_ENTRIES) for _ in range(rng.randint(0, 8))]
    else:  # mostly entries the C-level pass takes, now and then one it leaves to the loop
        entries = [_ODD_ENTRIES[rng.choice(_PLAIN)] for _ in range(rng.randint(0, 12))]
        if seed % 4 == 0 and entries:
            entries.insert(rng.randrange(len(entries)), rng.choice(_ODD_ENTRIES))
    value: dict[str, Any] = {"resourceType": "Bundle", "entry": entries}
    expected = bundle_entries(value)
    signals = [s for s in (_dstu2_signal(e["resource"]) for e in expected) if s is not None]
    if signals:
        with pytest.raises(NotR4Server) as refused:
            _check_supplied("conditions", value)
        assert signals[0] in refused.value.issues[0].diagnostics
    else:
        assert _check_supplied("conditions", value) == expected
    assert _check_supplied("x", {"resourceType": "Bundle", "entry": "no list"}) == []
    plain = [_ODD_ENTRIES[index] for index in _PLAIN]
    assert _plain_entries(plain) == plain == bundle_entries({"entry": plain})
    with pytest.raises(NotR4Server):
        _check_supplied("conditions", {"resourceType": "Condition", "clinicalStatus": "active"})
