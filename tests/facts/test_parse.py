"""fhir.parse: cheap filters first, then per-entry R4B validation with lenient quirks."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from cds_service.facts import parse as parse_module
from cds_service.facts.fhir_dates import calendar_date
from cds_service.facts.parse import parse_resources
from cds_service.facts.parsed_resources import ParsedResources, resolve_device, resolve_medication
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10CM, LOINC, RXNORM, SNOMED

SUBJECT = {"reference": "Patient/p1"}


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def observation(code: str = "38264-8", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": extra.pop("id", "o1"),
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": SUBJECT,
        "effectiveDateTime": "2021-02-15",
        "valueQuantity": {"value": -2.6, "unit": "{T-score}"},
    }
    resource.update(extra)
    return resource


def condition(code: str, system: str = ICD10CM, display: str = "", **extra: Any) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": extra.pop("id", "c1"),
        "subject": SUBJECT,
        "code": {"coding": [coding]},
    }
    resource.update(extra)
    return resource


def medication_use(resource_type: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": resource_type,
        "id": extra.pop("id", "m1"),
        "status": extra.pop("status", "completed"),
        "subject": SUBJECT,
        "medicationCodeableConcept": extra.pop(
            "medicationCodeableConcept", {"coding": [{"system": RXNORM, "code": "904431"}]}
        ),
    }
    if resource_type == "MedicationRequest":
        resource["intent"] = extra.pop("intent", "order")
    if resource_type == "MedicationAdministration":
        resource["effectiveDateTime"] = "2021-02-15"
    resource.update(extra)
    return resource


def kept(parsed: ParsedResources) -> int:
    return sum(
        len(getattr(parsed, name))
        for name in (
            "patients",
            "observations",
            "conditions",
            "procedures",
            "allergies",
            "medication_statements",
            "medication_requests",
            "medication_administrations",
            "medication_dispenses",
            "diagnostic_reports",
        )
    )


# ----- calendar_date -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-02-15", date(2021, 2, 15)),
        ("2021-02-15T23:30:00-05:00", date(2021, 2, 15)),  # as written, never converted to UTC
        ("2021-02-15T00:30:00+09:00", date(2021, 2, 15)),
        ("2021-02-15T10:00:00", date(2021, 2, 15)),
        ("2021-02", date(2021, 2, 1)),  # partial: first day (documented)
        ("2021", date(2021, 1, 1)),
        (datetime(2021, 2, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5))), date(2021, 2, 15)),
        (datetime(2021, 2, 15, 1, 0, tzinfo=UTC), date(2021, 2, 15)),
        (date(2020, 1, 1), date(2020, 1, 1)),
        ("20210215", None),
        ("2021-13-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
@pytest.mark.protocol("3b-dates")
def test_calendar_date(value: object, expected: date | None) -> None:
    assert calendar_date(value) == expected


@pytest.mark.protocol("3b-dates")
def test_validated_datetime_keeps_its_written_date(knowledge: Knowledge) -> None:
    parsed = parse_resources([observation(effectiveDateTime="2021-02-15T23:30:00-05:00")], knowledge)
    assert calendar_date(parsed.observations[0].effectiveDateTime) == date(2021, 2, 15)


# ----- status filters ----------------------------------------------------------------------------
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def _verification(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "id": "a1",
    "patient": SUBJECT,
    "code": {"coding": [{"system": RXNORM, "code": "46041", "display": "Alendronate"}]},
}


@pytest.mark.parametrize(
    ("resource", "is_kept"),
    [
        (observation(status="final"), True),
        (observation(status="amended"), True),
        (observation(status="corrected"), True),
        (observation(status="preliminary"), False),
        (observation(status="registered"), False),
        (observation(status="entered-in-error"), False),
        (observation(status="cancelled"), False),
        (condition("M81.0", verificationStatus=_verification(VERIFICATION, "confirmed")), True),
        (condition("M81.0"), True),
        (condition("M81.0", verificationStatus=_verification(VERIFICATION, "refuted")), False),
        (condition("M81.0", verificationStatus=_verification(VERIFICATION, "entered-in-error")), False),
        (medication_use("MedicationStatement", status="active"), True),
        (medication_use("MedicationStatement", status="not-taken"), False),
        (medication_use("MedicationStatement", status="intended"), False),
        (medication_use("MedicationStatement", status="entered-in-error"), False),
        (medication_use("MedicationRequest", status="active"), True),
        (medication_use("MedicationRequest", status="on-hold"), True),
        (medication_use("MedicationRequest", status="draft"), False),
        (medication_use("MedicationRequest", status="cancelled"), False),
        (medication_use("MedicationRequest", status="entered-in-error"), False),
        (medication_use("MedicationRequest", status="active", intent="proposal"), False),
        (medication_use("MedicationRequest", status="active", intent="plan"), False),
        (medication_use("MedicationAdministration", status="completed"), True),
        (medication_use("MedicationAdministration", status="not-done"), False),
        (medication_use("MedicationAdministration", status="entered-in-error"), False),
        (medication_use("MedicationDispense", status="completed"), True),
        (medication_use("MedicationDispense", status="declined"), False),
        (medication_use("MedicationDispense", status="cancelled"), False),
        (medication_use("MedicationDispense", status="entered-in-error"), False),
        (
            {
                "resourceType": "Procedure",
                "id": "pr1",
                "status": "not-done",
                "subject": SUBJECT,
                "code": {"coding": [{"system": SNOMED, "code": "84755001"}]},
            },
            False,
        ),
        (
            {
                "resourceType": "Procedure",
                "id": "pr1",
                "status": "completed",
                "subject": SUBJECT,
                "code": {"coding": [{"system": SNOMED, "code": "84755001"}]},
            },
            True,
        ),
        (ALLERGY, True),
        ({**ALLERGY, "verificationStatus": _verification(ALLERGY_VERIFICATION, "refuted")}, False),
        ({**ALLERGY, "verificationStatus": _verification(ALLERGY_VERIFICATION, "entered-in-error")}, False),
    ],
)
def test_status_filters(resource: dict[str, Any], is_kept: bool, knowledge: Knowledge) -> None:
    parsed = parse_resources([resource], knowledge)
    assert kept(parsed) == int(is_kept)
    assert parsed.ignored_by_status == ({} if is_kept else {resource["resourceType"]: 1})
    assert parsed.unreadable == {}


# ----- relevance ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("resource", "is_kept"),
    [
        (observation("38264-8"), True),  # DXA hip T-score
        (observation("17861-6", valueQuantity={"value": 9.4, "unit": "mg/dL"}), True),  # calcium
        (observation("8480-6", valueQuantity={"value": 120, "unit": "mm[Hg]"}), False),  # blood pressure
        (
            observation(
                "99999-9",
                component=[{"code": {"coding": [{"system": LOINC, "code": "38267-1"}]}}],
            ),
            True,  # a DXA panel: a component code is in the table
        ),
        (condition("M81.0"), True),  # osteoporosis, in the table
        (condition("M88.9"), True),  # ICD-10-CM category of the WHO M88 row
        (condition("S52.531D"), True),  # fracture prefix, not in the table
        (condition("S52531D"), True),  # ICD code without its dot
        (condition("C50.911"), True),  # any C00-C96
        (condition("D05.10"), False),  # in situ: not C00-C96
        (condition("I10"), False),  # hypertension
        (condition("254837009", SNOMED, "Malignant neoplasm of breast"), True),
        (condition("38341003", SNOMED, "Hypertensive disorder"), False),
        (condition("M81.0", "urn:oid:2.16.840.1.113883.6.90"), True),  # ICD-10-CM as an OID
        (medication_use("MedicationStatement", status="active"), True),  # RxNorm product in table
        (
            medication_use(
                "MedicationStatement",
                status="active",
                medicationCodeableConcept={"text": "Fosamax 70 mg weekly"},
            ),
            True,  # brand name in text
        ),
        (
            medication_use(
                "MedicationStatement",
                status="active",
                medicationCodeableConcept={"text": "Lisinopril 10 mg", "coding": [{"code": "314076"}]},
            ),
            False,
        ),
        (
            {
                **ALLERGY,
                "code": {"text": "Penicillin"},
            },
            False,
        ),
        (
            {
                **ALLERGY,
                "code": {"text": "drug allergy"},
                "reaction": [{"substance": {"text": "Prolia"}, "manifestation": [{"text": "rash"}]}],
            },
            True,
        ),
        (
            {
                "resourceType": "DiagnosticReport",
                "id": "dr1",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "38268-9"}]},
            },
            True,
        ),
        ({"resourceType": "Encounter", "id": "e1", "status": "finished"}, False),
    ],
)
def test_relevance(resource: dict[str, Any], is_kept: bool, knowledge: Knowledge) -> None:
    parsed = parse_resources([resource], knowledge)
    assert kept(parsed) == int(is_kept)


def test_irrelevant_resources_are_not_validated(
    knowledge: Knowledge, monkeypatch: pytest.MonkeyPatch
) -> None:
    validated: list[str] = []
    original = parse_module._validate_entry

    def spy(entry: Any) -> Any:
        validated.append(entry.resource.get("id"))
        return original(entry)

    monkeypatch.setattr(parse_module, "_validate_entry", spy)
    broken_vital = observation("8480-6", id="bp", valueQuantity={"value": "not a number"})
    parsed = parse_resources([broken_vital, observation(id="dxa")], knowledge)
    assert validated == ["dxa"]
    assert parsed.unreadable == {}


# ----- medications: references and the any-medication flag -----------------------------------------
def _reference_request(reference: str) -> dict[str, Any]:
    request = medication_use("MedicationRequest", id="r1", status="active")
    del request["medicationCodeableConcept"]
    request["medicationReference"] = {"reference": reference}
    return request


DENOSUMAB_MEDICATION = {
    "resourceType": "Medication",
    "id": "med1",
    "code": {"coding": [{"system": RXNORM, "code": "993452"}]},
}


@pytest.mark.parametrize(
    ("reference", "full_url"),
    [
        ("Medication/med1", None),
        ("https://ehr.example/fhir/Medication/med1", None),
        ("https://ehr.example/fhir/Medication/med1/_history/3", None),
        ("urn:uuid:7c9a1e4e-0000-4000-8000-000000000001", "urn:uuid:7c9a1e4e-0000-4000-8000-000000000001"),
    ],
)
@pytest.mark.protocol("3c-medication-reference")
def test_referenced_medication_is_resolved(
    reference: str, full_url: str | None, knowledge: Knowledge
) -> None:
    medication_entry: dict[str, Any] = {"resource": DENOSUMAB_MEDICATION}
    if full_url:
        medication_entry["fullUrl"] = full_url
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [medication_entry]}
    parsed = parse_resources([_reference_request(reference), bundle], knowledge)
    assert len(parsed.medication_requests) == 1
    medication = resolve_medication(parsed.medication_requests[0], parsed)
    assert medication is not None
    assert medication.id == "med1"


@pytest.mark.protocol("3c-medication-reference")
def test_contained_medication_is_resolved(knowledge: Knowledge) -> None:
    request = _reference_request("#c1")
    request["contained"] = [{**DENOSUMAB_MEDICATION, "id": "c1"}]
    parsed = parse_resources([request], knowledge)
    medication = resolve_medication(parsed.medication_requests[0], parsed)
    assert medication is not None
    assert medication.code is not None
    assert [c.code for c in medication.code.coding or ()] == ["993452"]
    assert parsed.medications == {}


@pytest.mark.protocol("3c-medication-reference")
def test_unrelated_and_unresolved_medication_references(knowledge: Knowledge) -> None:
    lisinopril = {"resourceType": "Medication", "id": "lis", "code": {"text": "lisinopril 10 mg"}}
    parsed = parse_resources(
        [
            _reference_request("Medication/lis"),
            lisinopril,
            _reference_request("Medication/missing") | {"id": "r2"},
        ],
        knowledge,
    )
    assert parsed.medication_requests == ()
    assert parsed.medications == {}
    assert parsed.unresolved_medication_references == 1
    assert parsed.any_medication_resource is True


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([], False),
        ([observation()], False),
        ([medication_use("MedicationStatement", status="entered-in-error")], False),
        (
            [
                medication_use(
                    "MedicationRequest",
                    status="active",
                    medicationCodeableConcept={"text": "Lisinopril 10 mg"},
                )
            ],
            True,  # another drug: medication data exist
        ),
        (
            [
                medication_use(
                    "MedicationRequest", status="cancelled", medicationCodeableConcept={"text": "Lisinopril"}
                )
            ],
            True,  # ignored status, but not entered-in-error (documented choice)
        ),
        ([medication_use("MedicationDispense", status="completed")], True),
    ],
)
def test_any_medication_resource(
    resources: list[dict[str, Any]], expected: bool, knowledge: Knowledge
) -> None:
    assert parse_resources(resources, knowledge).any_medication_resource is expected


# ----- lenient parsing ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "resource",
    [
        observation(effectiveDateTime="2021-02-15T10:00:00"),  # naive
        observation(effectiveDateTime="2021-02-15T10:00"),  # no seconds
        observation(effectiveDateTime="2021-02-15 10:00:00"),  # space separator
        observation(effectivePeriod={"start": "2021-02-15T10:00:00"}, effectiveDateTime=None),
        observation(issued="2021-02-15T10:00:00"),  # a naive instant
        observation(extension=[{"url": "https://vendor.example/ext/x", "valueString": "y"}]),
        observation(subject={"reference": "https://ehr.example/fhir/Patient/p1"}),
        observation(device={"display": ""}),  # empty string
        observation(valueQuantity={"value": -2.6, "unit": "{T-score}", "vendorField": 1}),  # unknown element
        observation(vendorTopLevel={"a": 1}),
    ],
)
def test_lenient_quirks_keep_the_entry(resource: dict[str, Any], knowledge: Knowledge) -> None:
    resource = {key: value for key, value in resource.items() if value is not None}
    parsed = parse_resources([resource], knowledge)
    assert parsed.unreadable == {}
    assert len(parsed.observations) == 1
    found = parsed.observations[0]
    effective = found.effectiveDateTime or (found.effectivePeriod.start if found.effectivePeriod else None)
    assert calendar_date(effective) == date(2021, 2, 15)


@pytest.mark.protocol("3b-dates")
def test_nested_naive_datetime_is_fixed(knowledge: Knowledge) -> None:
    request = medication_use(
        "MedicationRequest",
        status="active",
        authoredOn="2021-02-15T10:00:00",
        dispenseRequest={"validityPeriod": {"start": "2021-02-15T10:00:00", "end": "2021-05-15T09:00"}},
    )
    parsed = parse_resources([request], knowledge)
    dispense_request = parsed.medication_requests[0].dispenseRequest
    assert dispense_request is not None
    assert dispense_request.validityPeriod is not None
    assert calendar_date(dispense_request.validityPeriod.end) == date(2021, 5, 15)
    assert request["authoredOn"] == "2021-02-15T10:00:00"  # the caller's dict is not modified


@pytest.mark.protocol("3a-cap")
def test_broken_relevant_entry_is_counted_and_logged_without_values(
    knowledge: Knowledge, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "abc-PHI-4711"
    broken = observation(id="bad", valueQuantity={"value": secret, "unit": "{T-score}"})
    with caplog.at_level(logging.WARNING, logger="cds_service.facts.parse"):
        parsed = parse_resources([observation(id="good"), broken], knowledge)
    assert parsed.unreadable == {"Observation": 1}
    assert [o.id for o in parsed.observations] == ["good"]
    assert secret not in caplog.text
    assert "-2.6" not in caplog.text
    assert any("entry 1" in r.getMessage() and "ValidationError" in r.getMessage() for r in caplog.records)


def test_modifier_extension_makes_an_entry_unreadable(knowledge: Knowledge) -> None:
    resource = observation(
        modifierExtension=[{"url": "https://vendor.example/negated", "valueBoolean": True}]
    )
    parsed = parse_resources([resource], knowledge)
    assert parsed.observations == ()
    assert parsed.unreadable == {"Observation": 1}


# ----- input shapes and de-duplication -------------------------------------------------------------
def test_bundles_entries_and_duplicates(knowledge: Knowledge) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"fullUrl": "https://ehr.example/fhir/Observation/o1", "resource": observation()},
            {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}},
            {"resource": observation(id="o2"), "search": {"mode": "match"}},
        ],
    }
    parsed = parse_resources([bundle, {"resource": observation()}, observation(id="o2"), "junk"], knowledge)  # type: ignore[list-item]
    assert sorted(str(o.id) for o in parsed.observations) == ["o1", "o2"]


def test_device_is_kept_only_when_referenced(knowledge: Knowledge) -> None:
    device = {"resourceType": "Device", "id": "dxa1", "serialNumber": "1001"}
    other = {"resourceType": "Device", "id": "pump", "serialNumber": "9"}
    parsed = parse_resources([observation(device={"reference": "Device/dxa1"}), device, other], knowledge)
    assert set(parsed.devices) == {"Device/dxa1"}
    found = resolve_device(parsed.observations[0], parsed)
    assert found is not None
    assert found.serialNumber == "1001"


def test_patient_is_kept_with_only_read_elements(knowledge: Knowledge) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "birthDate": "1957-04-01",
        "gender": "female",
        "name": [{"family": "Doe"}],
    }
    parsed = parse_resources([patient], knowledge)
    assert parsed.patients[0].birthDate == date(1957, 4, 1)
    assert parsed.patients[0].name is None  # elements the protocol does not read are not kept
