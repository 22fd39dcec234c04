"""facts.parsed_resources: a Reference resolved to a contained resource, a fullUrl or `Type/id`."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.reference import Reference

from cds_service.facts.parsed_resources import resolve_reference

PROLIA = Medication(id="m1", code={"text": "Prolia"})
CONTAINED = Medication(id="med", code={"text": "Xgeva"})
LOOKUP: dict[str, Any] = {
    "Medication/m1": PROLIA,
    "urn:uuid:0b5b2a8e-1c1e-4a0e-9a51-7d1d1b0f7e11": PROLIA,
    "Device/d1": Device(id="d1"),
}


@pytest.mark.protocol("3c-medication-reference")
@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param({"reference": "#med"}, CONTAINED, id="contained"),
        pytest.param({"reference": "#other"}, None, id="contained-missing"),
        pytest.param({"reference": "Medication/m1"}, PROLIA, id="relative"),
        pytest.param({"reference": "https://ehr.example.org/fhir/Medication/m1"}, PROLIA, id="absolute"),
        pytest.param({"reference": "Medication/m1/_history/2"}, PROLIA, id="version-specific"),
        pytest.param(
            {"reference": "urn:uuid:0b5b2a8e-1c1e-4a0e-9a51-7d1d1b0f7e11"}, PROLIA, id="bundle-full-url"
        ),
        pytest.param({"reference": "Medication/unknown"}, None, id="not-in-data"),
        pytest.param({"reference": "Device/d1"}, None, id="wrong-resource-type"),
        pytest.param({"display": "Prolia 60 mg"}, None, id="display-only-left-to-name-match"),
    ],
)
def test_resolve_reference(reference: dict[str, Any], expected: Medication | None) -> None:
    assert resolve_reference(Reference(**reference), [CONTAINED], LOOKUP, Medication) is expected


def test_no_reference() -> None:
    assert resolve_reference(None, None, LOOKUP, Medication) is None
