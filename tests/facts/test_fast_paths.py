"""Fast paths of the parse stage's own checks agree with the careful paths they skip, shape by shape.

The first pass (triage, relevance, lab window, dateTime quirks) reads hundreds of raw resources per call, so
the common well-formed shapes are read with fewer steps; every other shape takes the careful path. Each test
here compares the fast path with the careful (or the former, direct) computation over the odd shapes a
record may carry: a status given as a list, a code given as an object, a number where a string belongs,
Unicode digits, a trailing newline, and so on.
"""

from __future__ import annotations

import random
import re
from datetime import date
from typing import Any

import pytest

from cds_service.facts import relevance, triage
from cds_service.facts.code_match import (
    _ingredient_pattern,
    canonical_system,
    icd_fracture_site,
    is_icd_cancer,
    is_icd_fracture,
    is_snomed_malignancy,
    normalise_code,
)
from cds_service.facts.fhir_dates import _fixed_if_quirky, _may_be_quirky
from cds_service.facts.lab_window import LabWindow, _careful_strict_day, _strict_day
from cds_service.facts.parse import _KEPT_TYPES
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, LOINC, SNOMED

KNOWLEDGE = packaged_knowledge()
UCUM = "http://unitsofmeasure.org"
_DATETIMES = [
    "2022-01-10",
    "2022-01-10T08:30:00Z",
    "2022-01-10T08:30:00.123456-05:00",
    "2022-01-10T23:59:59+14:00",
    "2022-01-10T08:30",
    "2022-01-10 08:30:00",
    "2022-01-10T08:30:00",
    "2022-01-10T08:30:00+0500",
    "2022-01-10T08:30Z",
    "2022-01-10T24:00:00Z",
    "2022-01-10T08:60:00Z",
    "2022-01-10T08:30:00+15:00",
    "2022-02-30",
    "0000-01-01",
    "2022-01-10\n",
    "2022-01-10T08:30:00Z\n",
    "٢٠٢٢-01-10",
    "2022-0١-10T08:30:00Z",
    " 2022-01-10",
    "2022-01",
    "",
]


def _mutants(seed: int, count: int) -> list[str]:
    """Strings near the dateTime shapes: characters replaced, inserted or dropped."""
    rng = random.Random(seed)
    alphabet = [*"0123456789-T :Z+.x\n", "٣", "K"]
    out = []
    for _ in range(count):
        chars = list(rng.choice(_DATETIMES))
        for _ in range(rng.randint(0, 3)):
            spot = rng.randrange(len(chars) + 1)
            action = rng.random()
            if action < 0.4 and chars:
                chars[min(spot, len(chars) - 1)] = rng.choice(alphabet)
            elif action < 0.7:
                chars.insert(spot, rng.choice(alphabet))
            elif chars:
                del chars[min(spot, len(chars) - 1)]
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("value", [*_DATETIMES, None, 20220110, ["2022-01-10"]])
def test_strict_day_fast_path_agrees_with_the_careful_one(value: Any) -> None:
    assert _strict_day(value) == _careful_strict_day(value)


def test_strict_day_agrees_on_near_miss_strings() -> None:
    for value in _mutants(1, 20_000):
        assert _strict_day(value) == _careful_strict_day(value), value


def test_strict_day_odd_shapes_take_the_careful_path() -> None:
    assert _strict_day("2022-01-10\n") == date(2022, 1, 10)  # `$` allows a trailing newline: careful path
    assert _strict_day("٢٠٢٢-01-10") == date(2022, 1, 10)  # Unicode digits are `\d`: careful path
    assert _strict_day("2022-02-30") is None


def test_quirk_prefilter_never_skips_a_quirk() -> None:
    """`_may_be_quirky` False means `_fixed_if_quirky` gives None: nothing is left unfixed."""
    for value in [*_DATETIMES, *_mutants(2, 20_000)]:
        if not _may_be_quirky(value):
            assert _fixed_if_quirky(value, instant=False) is None, value
            assert _fixed_if_quirky(value, instant=True) is None, value
    assert _may_be_quirky("2022-01-10T08:30")  # no seconds
    assert _may_be_quirky("2022-01-10T08:30:00")  # no zone
    assert _may_be_quirky("2022-01-10 08:30:00Z")  # space
    assert not _may_be_quirky("2022-01-10T08:30:00Z")


EGFR_CODE = {"coding": [{"system": LOINC, "code": "62238-1", "display": "eGFR CKD-EPI"}]}
_QUANTITIES: list[Any] = [
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": 62.5, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": float("nan"), "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": True, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": "62", "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": None, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": 62, "unit": ["mL/min"], "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": {"text": "mL/min"}},
    {"value": 62, "unit": "mL/min/1.73m2", "system": 5, "code": "mL/min/{1.73_m2}"},
    {"value": 62, "unit": " ", "system": UCUM, "code": "mL/min/{1.73_m2}"},
    {"value": 62, "unit": "furlongs", "system": UCUM, "code": "furlongs"},
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL min"},
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "comparator": "<"},
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}", "comparator": "~"},
    {"value": 62, "unit": "mL/min/1.73m2", "system": UCUM, "code": "mL/min/{1.73_m2}", "extra": 1},
    {"unit": "mL/min/1.73m2"},
    {},
    "62 mL/min",
]


def _old_lab(**changes: Any) -> dict[str, Any]:
    lab = {
        "resourceType": "Observation",
        "id": "egfr-1",
        "status": "final",
        "code": EGFR_CODE,
        "effectiveDateTime": "2022-01-10",
    }
    return {**lab, **changes}


def test_quantity_fast_path_agrees_with_the_careful_verdict() -> None:
    """The common Quantity shape is judged once per (kind, code, system, unit); every shape, asked twice
    (the second time from the memo), gets the careful verdict."""
    window = LabWindow.build(KNOWLEDGE, date(2024, 6, 1))
    for quantity in _QUANTITIES * 2:
        expected = window._readable_value("egfr", quantity)
        assert window.never_read(_old_lab(valueQuantity=quantity)) is expected, quantity
    assert window.never_read(_old_lab(valueQuantity=_QUANTITIES[0]))
    assert not window.never_read(_old_lab(valueQuantity=_QUANTITIES[3]))  # a bool value: careful path
    assert not window.never_read(_old_lab(valueQuantity=_QUANTITIES[6]))  # a list unit: careful path


def test_lab_kind_and_validity_memo_follows_the_careful_check() -> None:
    window = LabWindow.build(KNOWLEDGE, date(2024, 6, 1))
    codes: list[Any] = [
        EGFR_CODE,
        {"coding": [{"system": LOINC, "code": {"value": "62238-1"}}]},  # a code given as an object
        {"coding": [{"system": LOINC, "code": "62238-1", "display": " "}]},
        {"coding": {"system": LOINC, "code": "62238-1"}},
        {"coding": [{"system": LOINC, "code": "38264-8"}]},  # a DXA code: no lab kind
        "62238-1",
    ]
    for code in codes * 2:
        careful = window._judged_lab_kind(code, None)
        assert window._valid_lab_kind(code, None) == careful, code
    assert window._valid_lab_kind(EGFR_CODE, None) == "egfr"


_OBSERVATION_CODES: list[Any] = [
    {"coding": [{"system": LOINC, "code": "62238-1"}]},
    {"coding": [{"system": LOINC + "/", "code": " 62238-1 "}]},  # written loosely: normalised, relevant
    {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.1", "code": "62238-1"}]},
    {"coding": [{"system": LOINC, "code": {"text": "62238-1"}}]},  # a code given as an object
    {"coding": [{"system": LOINC, "code": ["62238-1"]}]},
    {"coding": [{"system": 5, "code": "62238-1"}]},
    {"coding": [{"system": True, "code": "62238-1"}, {"system": LOINC, "code": "8302-2"}]},
    {"coding": ({"system": LOINC, "code": "62238-1"},)},  # a tuple is no list
    {"coding": [None, "62238-1", {"system": LOINC, "code": "38264-8"}]},
    {"coding": {"system": LOINC, "code": "62238-1"}},
    {"text": "eGFR"},
    ["62238-1"],
    None,
]


def _direct_observation(concept: Any) -> bool:
    """The check before the memo keyed by raw values: every coding read through `raw_codings`."""
    return any(
        KNOWLEDGE.observation_codes(system, code) for system, code, _ in relevance.raw_codings(concept)
    )


def test_observation_code_memo_by_raw_values_agrees_with_the_direct_check() -> None:
    checker = relevance.RelevanceChecker(KNOWLEDGE, relevance.ReferencedIndex())
    for concept in _OBSERVATION_CODES * 2:
        resource = {"resourceType": "Observation", "status": "final", "code": concept}
        assert checker.is_relevant(resource) is _direct_observation(concept), concept
        component = {
            "resourceType": "Observation",
            "code": {"text": "panel"},
            "component": [{"code": concept}],
        }
        assert checker.is_relevant(component) is _direct_observation(concept), concept
    assert _direct_observation(_OBSERVATION_CODES[1]) and not _direct_observation(_OBSERVATION_CODES[3])


_FINDING_CODES: list[Any] = [
    {"coding": [{"system": ICD10CM, "code": "M81.0"}]},
    {"coding": [{"system": ICD10CM, "code": "m810"}]},
    {"coding": [{"system": ICD10CM, "code": "S72.001A"}]},
    {"coding": [{"system": ICD10, "code": "M80.05"}]},
    {"coding": [{"system": ICD10CM, "code": "C50.911"}]},
    {"coding": [{"system": SNOMED, "code": "1", "display": "Malignant neoplasm of breast"}]},
    {"coding": [{"system": SNOMED, "code": "1", "display": ["Malignant"]}]},
    {"coding": [{"system": ICD10CM, "code": {"code": "M81.0"}}]},  # a code given as an object
    {"coding": [{"system": ["x"], "code": "M81.0"}]},
    {"coding": [{"system": 7, "code": "M81.0"}]},
    {"coding": [{"system": ICD10CM, "code": "E11.9"}]},
    {"coding": "M81.0"},
    None,
]


def _direct_finding(concept: Any) -> bool:
    for coding in relevance._coding_dicts(concept):
        system, code = (
            canonical_system(relevance._text(coding.get("system"))),
            relevance._text(coding.get("code")),
        )
        code = normalise_code(system, code)
        if (
            KNOWLEDGE.condition_concepts(system, code)
            or icd_fracture_site(system, code, KNOWLEDGE) is not None
            or is_icd_cancer(system, code)
            or is_snomed_malignancy(system, relevance._text(coding.get("display")))
        ):
            return True
    return False


def test_finding_code_memo_by_raw_values_agrees_with_the_direct_check() -> None:
    checker = relevance.RelevanceChecker(KNOWLEDGE, relevance.ReferencedIndex())
    verdicts = [checker.finding_concept(concept) for concept in _FINDING_CODES * 2]
    assert verdicts == [_direct_finding(concept) for concept in _FINDING_CODES * 2]
    assert verdicts[:6] == [True] * 6 and verdicts[7] is False


def _rule_site(system: str, code: str) -> str | None:
    """`icd_fracture_site` as the knowledge rules read one by one (first match wins)."""
    rules = KNOWLEDGE.model.fracture_sites.icd_prefixes
    return next(
        (rule.site for rule in rules if system in (ICD10, ICD10CM) and rule.matches(system, code)), None
    )


def test_icd_fracture_tables_agree_with_the_rules() -> None:
    rng = random.Random(3)
    codes = [
        "S72.001A",
        "S72",
        "S22.0",
        "M48.50",
        "M80.08XA",
        "M80.0AXA",
        "M80.88",
        "M80.15",
        "C50.9",
        "",
        "s72",
    ]
    codes += [
        f"{rng.choice('MSCZ')}{rng.randint(0, 99):02d}.{rng.choice('0123456789AB')}" for _ in range(3000)
    ]
    for system in (ICD10, ICD10CM, SNOMED, LOINC, ""):
        for code in codes:
            site = _rule_site(system, code)
            assert icd_fracture_site(system, code, KNOWLEDGE) == site, (system, code)
            assert is_icd_fracture(system, code, KNOWLEDGE) is (site is not None), (system, code)


def test_ingredient_look_ahead_keeps_every_match() -> None:
    pattern, _ = _ingredient_pattern(KNOWLEDGE)
    plain = re.compile(re.sub(r"\(\?=\[[^\]]*\]\)", "", pattern.pattern, count=1), re.IGNORECASE)
    assert plain.pattern != pattern.pattern
    texts = [
        "alendronate 70 mg weekly",
        "ALENDRONIC  ACID 70 MG",
        "Metformin 500 mg",
        "zoledronic\nacid",
        "xalendronate",
        "Proliа",  # a Cyrillic a
        "ſtoboclo and \u212aelvin",  # long s, Kelvin sign: matched without case by both or neither
        "İbandronate",
        "",
    ]
    rng = random.Random(4)
    names = sorted(KNOWLEDGE.medication_names())
    texts += [
        f"{rng.choice(['', 'x', ' ', '-'])}{rng.choice(names).upper()}{rng.choice(['', 's', ' 5'])}"
        for _ in range(500)
    ]
    for text in texts:
        assert [(m.span(), m.group(0)) for m in pattern.finditer(text)] == [
            (m.span(), m.group(0)) for m in plain.finditer(text)
        ], text


def test_status_given_as_a_list_is_counted_ignored_on_the_fast_path() -> None:
    resources: list[Any] = [
        {"resourceType": "Observation", "id": "o1", "status": ["final"], "code": _OBSERVATION_CODES[0]},
        {
            "resourceType": "Observation",
            "id": "o2",
            "status": {"code": "final"},
            "code": _OBSERVATION_CODES[0],
        },
        {"resourceType": "Observation", "id": "o3", "status": "final", "code": _OBSERVATION_CODES[0]},
        {"resourceType": "MedicationRequest", "id": "m1", "status": ["active"], "intent": ["plan"]},
    ]
    collected = triage.collect_kept(resources, _KEPT_TYPES)
    selected = triage.select_wanted(
        collected, relevance.RelevanceChecker(KNOWLEDGE, collected.referenced), None
    )
    assert selected.ignored == {"Observation": 2}
    assert [item[2]["id"] for item, _ in selected.wanted] == ["o3"]
    assert sum(relevance.ignored_by_status(resource) for resource in resources) == 2


def test_plain_resources_and_bundle_entries_are_kept_alike() -> None:
    """The plain-resource fast path of `collect_kept` keeps what the flattening path keeps."""
    resources: list[Any] = [
        {"resourceType": "Condition", "id": "c1"},
        {"resourceType": "Condition", "id": "c1"},
        {"resourceType": "Medication", "id": "m1"},
        {"resourceType": "Practitioner", "id": "p1"},
        {"resourceType": "Observation", "id": ""},
        {"resourceType": "Observation"},
        {"resourceType": "Device", "id": 5},
    ]
    plain = triage.collect_kept(resources, _KEPT_TYPES)
    bundled = triage.collect_kept(
        [{"resourceType": "Bundle", "entry": [{"resource": resource} for resource in resources]}], _KEPT_TYPES
    )
    assert plain == bundled
    assert [item[0] for item in plain.items] == [0, 4, 5]
    assert set(plain.referenced.resources) == {"Medication/m1"}
    assert [item[0] for item in plain.referenced_items] == [2, 6]
