"""Which medicationReferences the batched Medication fetch asks fhirServer for (protocol §3c)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.gather.medication_fetch import missing_medication_ids

BASE = "https://fhir.example.org/r4"


def _use(reference: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationReference": {"reference": reference},
        **extra,
    }


@pytest.mark.protocol("3c-medication-reference")
@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        ([_use("Medication/a")], ["a"]),  # relative
        ([_use(f"{BASE}/Medication/b")], ["b"]),  # absolute on fhirServer
        ([_use(f"{BASE}/Medication/b/_history/3")], ["b"]),
        ([_use("https://other.example.net/fhir/Medication/c")], []),  # another server: display only
        ([_use("urn:uuid:0f3e2c1a-1111-2222-3333-444455556666")], []),
        ([_use("#m1", contained=[{"resourceType": "Medication", "id": "m1"}])], []),  # contained
        ([_use("Medication/a"), {"resourceType": "Medication", "id": "a"}], []),  # supplied
        ([_use("Substance/x")], []),  # not a Medication
        ([_use("Medication/a", status="entered-in-error")], []),  # ignored everywhere (§2)
        ([_use("Medication/a", medicationCodeableConcept={"text": "alendronate"})], []),
        ([_use("Medication/b"), _use("Medication/a"), _use("Medication/a")], ["a", "b"]),  # one batch
    ],
)
def test_missing_medication_ids(resources: list[dict[str, Any]], expected: list[str]) -> None:
    assert missing_medication_ids(resources, BASE) == expected
