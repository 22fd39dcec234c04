"""facts.extract_common: codings, texts, numbers, units and effective dates of validated resources."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.quantity import Quantity

from cds_service.facts.extract_common import (
    Caveats,
    codings,
    concept_texts,
    decimal_text,
    effective_date,
    first_text,
    round_2,
    unit_of,
    units_of,
)
from cds_service.knowledge.schema import ICD10CM, SNOMED


def test_codings_are_canonical_and_normalised() -> None:
    concept = CodeableConcept(
        coding=[
            {
                "system": "urn:oid:2.16.840.1.113883.6.90",
                "code": "m8008xa",
                "display": "Osteoporotic fracture",
            },
            {"system": "http://snomed.info/sct/", "code": "123"},
        ],
        text="Vertebral fracture",
    )
    assert codings(concept) == [(ICD10CM, "M80.08XA", "Osteoporotic fracture"), (SNOMED, "123", "")]
    assert concept_texts(concept) == ["Vertebral fracture", "Osteoporotic fracture"]
    assert codings(None) == []
    assert concept_texts(CodeableConcept(text=" ")) == []


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(Decimal("70.0"), "70", id="trailing-zero"),
        pytest.param(Decimal("0.050"), "0.05", id="small"),
        pytest.param(Decimal("1.2E+2"), "120", id="exponent"),
        pytest.param(Decimal("60"), "60", id="integer"),
    ],
)
def test_decimal_text(value: Decimal, text: str) -> None:
    assert decimal_text(value) == text


@pytest.mark.protocol("3b-rounding")
@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        pytest.param(Decimal("0.195"), Decimal("0.20"), id="half-up"),
        pytest.param(Decimal("-0.195"), Decimal("-0.20"), id="half-away-from-zero-negative"),
        pytest.param(Decimal("0.194"), Decimal("0.19"), id="down"),
    ],
)
def test_round_2(value: Decimal, rounded: Decimal) -> None:
    assert round_2(value) == rounded


@pytest.mark.parametrize(
    ("quantity", "unit", "units"),
    [
        pytest.param(
            {"value": 1, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"},
            "ng/mL",
            ["ng/mL", "ng/mL"],
            id="code-and-unit",
        ),
        pytest.param({"value": 1, "unit": " SD "}, "SD", ["SD"], id="unit-only"),
        pytest.param({"value": 1}, "", [], id="no-unit"),
    ],
)
def test_units(quantity: dict[str, Any], unit: str, units: list[str]) -> None:
    assert unit_of(Quantity(**quantity)) == unit
    assert units_of(Quantity(**quantity)) == units


@pytest.mark.protocol("3b-dates", "3c-panels")
@pytest.mark.parametrize(
    ("effective", "day"),
    [
        pytest.param(
            {"effectiveDateTime": "2021-02-15T23:30:00-05:00"}, date(2021, 2, 15), id="local-date-kept"
        ),
        pytest.param({"effectiveDateTime": "2021-02"}, date(2021, 2, 1), id="partial-date"),
        pytest.param(
            {"effectivePeriod": {"start": "2021-02-15T08:00:00+01:00", "end": "2021-02-16"}},
            date(2021, 2, 15),
            id="epic-panel-period-start",
        ),
        pytest.param({"effectivePeriod": {"end": "2021-02-16"}}, date(2021, 2, 16), id="period-end-only"),
        pytest.param({"effectiveInstant": "2021-02-15T23:30:00.000-05:00"}, date(2021, 2, 15), id="instant"),
        pytest.param({}, None, id="undated"),
    ],
)
def test_effective_date(effective: dict[str, Any], day: date | None) -> None:
    observation = Observation(status="final", code={"text": "T-score"}, **effective)
    assert effective_date(observation) == day


def test_caveats_keep_first_seen_order_without_duplicates() -> None:
    caveats = Caveats()
    for text in ("b", "a", "b"):
        caveats.add(text)
    assert caveats.as_tuple() == ("b", "a")
    assert first_text(["", "  ", "x", "y"]) == "x"
    assert first_text([]) == ""
