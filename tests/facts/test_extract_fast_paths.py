"""The per-call memos and fast paths of extraction agree with the careful path they stand for (issue 14)."""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from cds_service.facts.code_match import (
    KNOWN_SYSTEMS,
    _any_rule,
    canonical_system,
    icd_fracture_site,
    normalise_code,
)
from cds_service.facts.extract_common import PerCall, codings
from cds_service.facts.extract_dxa import _text_side, from_display, scanner_of
from cds_service.facts.extract_strength import doses_in_text
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import ScannerId
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, ICD_SYSTEMS, PACKAGED_DIR, SNOMED

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


# ----- ICD fracture-site rules: one search for "any rule", then the rules in order ---------------------
def careful_icd_fracture_site(system: str, code: str, knowledge: Knowledge) -> str | None:
    if system not in ICD_SYSTEMS:
        return None
    for rule in knowledge.model.fracture_sites.icd_prefixes:
        if rule.matches(system, code):
            return rule.site
    return None


def icd_codes() -> list[tuple[str, str]]:
    """Every ICD code the packaged condition table names, each prefix of it, and near misses."""
    with (PACKAGED_DIR / "codes" / "conditions.csv").open(encoding="utf-8", newline="") as table:
        codes = {row["code"] for row in csv.DictReader(table) if row["system"] in ICD_SYSTEMS}
    codes |= {code[:length] for code in list(codes) for length in range(1, len(code))}
    codes |= {"", "M80.0", "M80.8B", "M80.08XA", "m80.08XA", "S72", "S7", "XS72.0", "S32.010A", "Z87.310"}
    return [(system, code) for system in (ICD10, ICD10CM, SNOMED, "") for code in sorted(codes)]


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return packaged_knowledge()


def test_icd_fracture_site_agrees_with_every_rule_in_order(knowledge: Knowledge) -> None:
    for system, code in icd_codes():
        assert icd_fracture_site(system, code, knowledge) == careful_icd_fracture_site(
            system, code, knowledge
        ), (
            system,
            code,
        )


@pytest.mark.parametrize(
    "rules",
    [
        [("S72", None), ("", r"M80\.[08]5"), ("", r"S22\.[0-5]|M48\.5"), ("S32.0", None)],
        [("", r"M80\.0$"), ("M80", None), ("", r"(?i:s)82")],
        [("", r"[A-Z]\d\d\.\d+")],
        [("S.2", None), ("a+b", None)],  # prefixes are literal text, never patterns
    ],
)
def test_any_rule_matches_exactly_when_some_rule_does(rules: list[tuple[str, str | None]]) -> None:
    compiled = tuple((prefix, re.compile(pattern) if pattern else None, "site") for prefix, pattern in rules)
    any_rule = _any_rule(compiled)
    assert any_rule is not None
    codes = [
        "S72.0",
        "S82.1",
        "s82.1",
        "M80.05",
        "M80.0",
        "M80.0X",
        "M48.5",
        "S22.6",
        "S32.01",
        "SX2",
        "a+b",
        "",
    ]
    codes += ["S.2", "S22.3", "S222", "M80", "Q12.345"]
    for code in codes:
        some_rule = any(
            code.startswith(prefix) if pattern is None else pattern.match(code) is not None
            for prefix, pattern, _ in compiled
        )
        assert (any_rule.match(code) is not None) == some_rule, (rules, code)


@pytest.mark.parametrize(
    "pattern",
    [r"(S72)\.\d", r"(?P<category>S72)", r"(?i)s72"],  # own groups, a global flag: rules kept one by one
)
def test_rules_that_cannot_be_joined_are_tried_one_by_one(pattern: str) -> None:
    assert _any_rule((("S82", None, "other"), ("", re.compile(pattern), "hip_femur"))) is None


# ----- codings: the table systems are looked up, other codes only stripped ------------------------------
def careful_codings(concept: Any) -> list[tuple[str, str, str]]:
    out = []
    for coding in concept.coding or ():
        system = canonical_system(coding.system)
        out.append((system, normalise_code(system, coding.code), coding.display or ""))
    return out


@pytest.mark.parametrize(
    "system", [*sorted(KNOWN_SYSTEMS), None, "", " http://loinc.org ", "http://loinc.org/"]
)
@pytest.mark.parametrize("code", [None, "", "  ", "m810", "M81.0", " s72.001a ", "38267-1", " 904431"])
def test_codings_agree_with_canonical_system_and_normalise_code(system: str | None, code: str | None) -> None:
    # As loosely as any reader may meet them (validation would refuse some): the two paths must agree.
    concept = SimpleNamespace(
        coding=[
            SimpleNamespace(system=system, code=code, display="shown"),
            SimpleNamespace(system=ICD10CM, code="s7200", display=None),
        ]
    )
    assert codings(concept) == careful_codings(concept)
