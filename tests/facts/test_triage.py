"""facts.triage: the fused first pass decides as the separate filters (patient_scope, de-duplication)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from benchmarks import records
from cds_service.facts import relevance, triage
from cds_service.facts.parse import _KEPT_TYPES, parse_resources
from cds_service.facts.patient_scope import scoped
from cds_service.knowledge.loader import packaged_knowledge

KNOWLEDGE = packaged_knowledge()


def _condition(rid: str, subject: Any = None, **extra: Any) -> dict[str, Any]:
    resource = {"resourceType": "Condition", "id": rid, **extra}
    if subject is not None:
        resource["subject"] = subject
    return resource


def _mixed(patient_id: str) -> list[Any]:
    """Top-level items of every shape the scope and the flattening read, some about another patient."""
    mine = {"reference": f"Patient/{patient_id}"}
    return [
        {"resourceType": "Patient", "id": patient_id},
        {"resourceType": "Patient", "id": "other"},
        _condition("c1", mine),
        _condition("c1", mine),  # duplicate: the first is kept
        _condition("c2", {"reference": "Patient/other"}),
        _condition("c3", {"reference": f"https://ehr.example.org/fhir/Patient/{patient_id}/_history/2"}),
        _condition("c4", {"reference": 42}),
        _condition("c5", "not an object"),
        _condition("c6"),
        {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/other"}},
        {"resourceType": "AllergyIntolerance", "id": "a2", "patient": mine},
        {"resourceType": "Medication", "id": "m1", "subject": {"reference": "Patient/other"}},
        {"resourceType": "Practitioner", "id": "pr1"},
        {"resourceType": ["Condition"], "id": "odd", "subject": mine},
        "not a resource",
        None,
        {
            "resourceType": "Bundle",
            "entry": [
                {"fullUrl": "urn:uuid:1", "resource": _condition("c7", {"reference": "Patient/other"})},
                {"resource": _condition("c8", mine), "search": {"mode": "outcome"}},
                {"fullUrl": 7, "resource": {"resourceType": "Device", "id": "d1"}},
                "not an entry",
            ],
        },
        {
            "resourceType": "Bundle",
            "subject": {"reference": "Patient/other"},
            "entry": [{"resource": _condition("c10")}],
        },
        {"fullUrl": "urn:uuid:2", "resource": _condition("c9", {"reference": "Patient/other"})},
        {"resource": "not a resource"},
    ]


@pytest.mark.parametrize("patient_id", ["p1", "p1/_history/3", "other"])
def test_collect_scopes_like_patient_scope(patient_id: str) -> None:
    raw = _mixed(patient_id)
    fused = triage.collect_kept(raw, _KEPT_TYPES, patient_id)
    separate = triage.collect_kept(scoped(raw, patient_id), _KEPT_TYPES)
    assert fused.items == separate.items
    assert fused.referenced_items == separate.referenced_items
    assert fused.referenced.resources == separate.referenced.resources
    kept = {(item[3], item[2].get("id")) for item in fused.items}
    if patient_id == "p1":
        assert ("Condition", "c2") not in kept  # another patient's, at the top level
        assert ("Condition", "c7") in kept  # inside a Bundle: not scoped
        assert ("Condition", "c8") not in kept  # a search outcome entry
        assert ("Condition", "c10") not in kept  # its Bundle names another patient (read as scoped reads it)
        assert [item[0] for item in fused.items if item[2].get("id") == "c1"] == [1]  # first occurrence


def test_collect_positions_count_every_flattened_resource() -> None:
    raw = [{"resourceType": "Practitioner", "id": "pr1"}, _condition("c1"), {"resource": _condition("c2")}]
    assert [(item[0], item[2]["id"]) for item in triage.collect_kept(raw, _KEPT_TYPES).items] == [
        (1, "c1"),
        (2, "c2"),
    ]


@pytest.mark.parametrize("size", ["small", "realistic"])
def test_parse_with_patient_id_equals_parse_of_scoped(size: str) -> None:
    as_of = dt.date(2026, 11, 30)
    request = records.request_for(size, as_of)
    patient_id = request["context"]["patientId"]
    resources: list[Any] = [value for value in request["prefetch"].values() if value]
    resources.append(_condition("intruder", {"reference": "Patient/someone-else"}, code={"text": "fracture"}))
    fused = parse_resources(resources, KNOWLEDGE, as_of=as_of, patient_id=patient_id)
    separate = parse_resources(scoped(resources, patient_id), KNOWLEDGE, as_of=as_of)
    assert fused == separate
    assert fused.observations  # the record was read at all


_VERIFICATION_SHAPES: list[Any] = [
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "refuted"}]},
    {"coding": [{"code": " entered-in-error "}]},
    {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "refuted"}]},  # upper-cased: no
    {"coding": [{"code": "confirmed"}, {"code": "refuted"}]},
    {"coding": [{"code": "Refuted"}]},
    {"coding": [{"code": ["refuted"]}]},
    {"coding": ["refuted", None, {"system": 5, "code": "refuted"}]},
    {"coding": {"code": "refuted"}},
    {"text": "refuted"},
    "refuted",
    None,
]


@pytest.mark.parametrize("rtype", ["Condition", "AllergyIntolerance"])
def test_select_counts_ignored_verification_as_ignored_by_status(rtype: str) -> None:
    resources = [
        {"resourceType": rtype, "id": f"r{index}", "verificationStatus": shape}
        for index, shape in enumerate(_VERIFICATION_SHAPES * 2)  # twice: the memoised verdicts too
    ]
    collected = triage.collect_kept(resources, _KEPT_TYPES)
    checker = relevance.RelevanceChecker(KNOWLEDGE, collected.referenced)
    selected = triage.select_wanted(collected, checker, None)
    expected = sum(relevance.ignored_by_status(resource) for resource in resources)
    assert expected == 2 * 4  # refuted, entered-in-error, one of two codings, a system that is no string
    assert selected.ignored.get(rtype, 0) == expected


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_DRUG_CONCEPTS: list[Any] = [
    {"coding": [{"system": RXNORM, "code": "46041"}]},  # a table drug by code
    {"coding": [{"system": RXNORM + "/", "code": " 46041 "}]},  # the same, as some EHRs write it
    {"coding": [{"system": RXNORM, "code": "999999", "display": "alendronate 70 mg tablet"}]},  # by name
    {"coding": [{"system": RXNORM, "code": "999999", "display": "metformin 500 mg tablet"}]},
    {"coding": [{"system": RXNORM, "code": "999999"}], "text": "Alendronate weekly"},
    {"coding": [{"system": RXNORM, "code": 46041}]},  # a number is no code
    {"coding": [{"system": RXNORM, "code": "999999", "display": ["alendronate"]}]},  # unhashable
    {"coding": ({"system": RXNORM, "code": "46041"},), "text": "metformin"},  # a tuple is no list
    {"coding": [None, "alendronate", {"system": RXNORM, "code": "46041"}]},
    {"text": 1},
    {"text": True},
    "alendronate",
    None,
]


def test_memoised_drug_verdicts_equal_the_direct_check() -> None:
    """The per-call memo of `_names_agent` (by raw values) gives the direct check's verdict, every time."""
    memoised = relevance.RelevanceChecker(KNOWLEDGE, relevance.ReferencedIndex())
    verdicts = [memoised._names_agent(concept) for concept in _DRUG_CONCEPTS * 2]
    direct = relevance.RelevanceChecker(KNOWLEDGE, relevance.ReferencedIndex())
    assert verdicts == [direct._names_agent_of(concept) for concept in _DRUG_CONCEPTS * 2]
    assert verdicts[:5] == [True, True, True, False, True]  # the cases a mutation would most likely break
    assert verdicts[5] is False and verdicts[7] is False
