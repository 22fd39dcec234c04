"""The per-call memos and fast paths of extraction agree with the careful path they stand for (issue 14)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from cds_service.facts.extract_common import PerCall
from cds_service.facts.extract_dxa import _text_side, from_display, scanner_of
from cds_service.facts.extract_strength import doses_in_text
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import ScannerId

DOSE_TEXTS = [
    ("alendronate", "alendronate 70 mg oral tablet weekly"),
    ("denosumab", "Prolia 60MG/ML injection"),
    ("denosumab", "denosumab 70 mg/mL"),
    ("zoledronic_acid", "zoledronic acid 0.05 mg/mL"),
    ("zoledronic_acid", "0.1 mg/kg"),
    ("alendronate", "70 mg and 35 mg"),
    ("alendronate", "as directed"),
]


def test_per_call_computes_each_argument_tuple_once() -> None:
    calls: list[tuple[str, str]] = []

    def doses(agent: str, text: str) -> tuple[Decimal, ...]:
        calls.append((agent, text))
        return tuple(doses_in_text(agent, text))

    memo: PerCall[tuple[Decimal, ...]] = PerCall(doses)
    for _ in range(3):
        assert memo("denosumab", "denosumab 70 mg/mL") == (Decimal(120),)
        assert memo("zoledronic_acid", "denosumab 70 mg/mL") == ()  # another agent: another answer
    assert calls == [("denosumab", "denosumab 70 mg/mL"), ("zoledronic_acid", "denosumab 70 mg/mL")]


def test_per_call_remembers_none() -> None:
    calls: list[str] = []

    def nothing(text: str) -> None:
        calls.append(text)

    memo: PerCall[None] = PerCall(nothing)
    assert memo("a text") is None
    assert memo("a text") is None
    assert calls == ["a text"]


@pytest.mark.parametrize(("agent", "text"), DOSE_TEXTS)
def test_remembered_doses_agree_with_doses_in_text(agent: str, text: str) -> None:
    memo: PerCall[tuple[Decimal, ...]] = PerCall(lambda *args: tuple(doses_in_text(*args)))
    assert list(memo(agent, text)) == doses_in_text(agent, text)
    assert list(memo(agent, text)) == doses_in_text(agent, text)


@pytest.mark.parametrize(
    "texts",
    [
        ["DXA Left hip T-score"],
        ["Right femoral neck"],
        ["left and right"],
        ["leftover", "Outright"],
        ["bright left"],
        ["LEFT"],
        ["Links", "right side"],
        [],
    ],
)
def test_text_side_skips_only_searches_that_could_not_match(texts: list[str]) -> None:
    import re

    sides = set()
    for text in texts:
        lowered = text.lower()
        if re.search(r"\bleft\b", lowered):
            sides.add("left")
        if re.search(r"\bright\b", lowered):
            sides.add("right")
        if sides:
            break
    assert _text_side(texts) == (sides.pop() if len(sides) == 1 else None)


def dxa_observation(**extra: Any) -> Observation:
    return Observation.model_validate(
        {
            "resourceType": "Observation",
            "id": "o1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "38267-1"}]},
            **extra,
        }
    )


@pytest.mark.parametrize(
    "device",
    [
        {"display": "DXA-1 Hologic Horizon A (SN 1001)"},
        {"display": "Lunar iDXA"},
        {"display": "Lunar iDXA", "identifier": {"value": "dev-7"}},
        {"reference": "Device/d1"},
        {"reference": "#dev", "display": "S/N: Q5"},
    ],
)
def test_remembered_display_scanner_agrees_with_the_careful_path(device: dict[str, Any]) -> None:
    observation = dxa_observation(device=device)
    memo: PerCall[ScannerId] = PerCall(from_display)
    careful = scanner_of(observation, ParsedResources())
    assert scanner_of(observation, ParsedResources(), memo) == careful
    assert scanner_of(observation, ParsedResources(), memo) == careful
