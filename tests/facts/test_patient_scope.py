"""facts.patient_scope: only resources about the patient in context are read (FHIR Reference shapes)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.facts.patient_scope import belongs_to, scoped

PATIENT = "p1"


def condition(**subject: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1", **subject}


@pytest.mark.parametrize(
    ("resource", "kept"),
    [
        pytest.param(condition(subject={"reference": "Patient/p1"}), True, id="relative-reference"),
        pytest.param(
            condition(subject={"reference": "https://ehr.example.org/fhir/Patient/p1"}),
            True,
            id="absolute-reference",
        ),
        # FHIR R4 §2.3.0 References: a reference may be version-specific (`Patient/p1/_history/3`).
        pytest.param(
            condition(subject={"reference": "Patient/p1/_history/3"}), True, id="version-specific-reference"
        ),
        pytest.param(
            condition(subject={"reference": "https://ehr.example.org/fhir/Patient/p1/_history/3"}),
            True,
            id="absolute-version-specific-reference",
        ),
        pytest.param(condition(subject={"reference": "Patient/p2"}), False, id="other-patient"),
        pytest.param(
            condition(subject={"reference": "Patient/p2/_history/1"}), False, id="other-patient-versioned"
        ),
        pytest.param(condition(subject={"reference": "Patient/p11"}), False, id="id-with-same-prefix"),
        pytest.param(condition(subject={"reference": "Patient/xp1"}), False, id="id-with-same-suffix"),
        pytest.param(
            condition(subject={"reference": "urn:uuid:9f1c1f6e-8d1e-4c55-9c55-5c2f1e9b5d01"}),
            True,
            id="urn-uuid-inside-single-patient-bundle",
        ),
        pytest.param(condition(subject={"display": "Jane Doe"}), True, id="display-only-subject"),
        pytest.param(condition(), True, id="no-subject"),
        pytest.param(
            condition(subject={"reference": "Group/g1"}), True, id="group-subject-not-provably-other"
        ),
        pytest.param(
            {"resourceType": "MedicationRequest", "subject": {"reference": "Patient/p2"}},
            False,
            id="medication-request-other-patient",
        ),
        pytest.param(
            {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p1"}},
            True,
            id="allergy-patient-element",
        ),
        pytest.param(
            {"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p2"}},
            False,
            id="allergy-other-patient",
        ),
        pytest.param({"resourceType": "Patient", "id": "p1"}, True, id="the-patient"),
        pytest.param({"resourceType": "Patient", "id": "p2"}, False, id="another-patient-resource"),
        pytest.param({"resourceType": "Medication", "id": "m1"}, True, id="medication-is-unscoped"),
        pytest.param({"resourceType": "Device", "id": "d1"}, True, id="device-is-unscoped"),
        pytest.param({"resourceType": "Practitioner", "id": "pr1"}, True, id="practitioner-is-unscoped"),
        pytest.param({"id": "x"}, True, id="no-resource-type-left-to-parse"),
        pytest.param(condition(subject={"reference": 42}), True, id="non-string-reference-left-to-parse"),
    ],
)
def test_belongs_to(resource: dict[str, Any], kept: bool) -> None:
    assert belongs_to(resource, PATIENT) is kept


def test_scoped_filters_and_skips_non_objects() -> None:
    mine = condition(subject={"reference": "Patient/p1"})
    theirs = condition(subject={"reference": "Patient/p2"})
    resources: list[Any] = [mine, theirs, "not a resource", None]
    assert list(scoped(resources, PATIENT)) == [mine]
