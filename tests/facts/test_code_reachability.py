"""Reachability of every code-table row and every `code_additions` code (no dead rows).

Each row of conditions.csv, medications.csv and observations.csv, and each code the knowledge file adds,
is put in a minimal FHIR resource, run through the real parse + extract, and must come out classified as
its concept / ingredient / kind. Where a concept drives a rule, the finding is also run through the engine
on a record that otherwise escalates (tests/clinical_builders.base_record), and the rule must fire.
Rows of kinds the protocol does not use are listed in UNUSED with the reason. Grouped, no HTTP app.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cds_service.facts.extract import extract_record
from cds_service.facts.extract_common import decimal_text
from cds_service.facts.extract_findings import extract_findings
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import ClinicalFinding
from cds_service.facts.relevance import ReferencedIndex, RelevanceChecker
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, PACKAGED_DIR, SNOMED
from cds_service.rules.decision import Decision
from cds_service.rules.history import COUNTED_FRACTURE_SITES, OSTEOPOROTIC_ONLY_SITES
from cds_service.rules.protocol import evaluate
from tests.clinical_builders import AS_OF, base_record, dxa, lab

KNOWLEDGE = packaged_knowledge()
SUBJECT = {"reference": "Patient/p1"}
ONSET = "2024-10-01"  # within 12 months (CV exclusion) and 2 years (R4b) of AS_OF
FRACTURE_SITE_OF_CONCEPT = {
    "hip_fracture": "hip_femur",
    "vertebral_fracture": "vertebra",
    "forearm_fracture": "forearm",
    "humerus_fracture": "humerus",
}
# ICD M80 site character (ICD-10-CM 6th, WHO 5th) -> site, restated from the classifications (the M80 rows'
# displays): CM 0 unspecified .. 8 vertebra, A other site, B pelvis; WHO 0 multiple .. 8 other, 9 unspecified.
M80_CM_SITE = {
    "0": "unspecified",
    "1": "shoulder",
    "2": "humerus",
    "3": "forearm",
    "4": "other",
    "5": "hip_femur",
    "6": "tibia_ankle",
    "7": "tibia_ankle",
    "8": "vertebra",
    "A": "unspecified",
    "B": "pelvis",
}
M80_WHO_SITE = {**M80_CM_SITE, "8": "unspecified", "9": "unspecified"}
# SNOMED osteoporotic fractures at sites the protocol does not count (fingers/hand, toes/foot, scapula).
NOT_COUNTED_WORDS = re.compile(r"\b(hand|foot|scapula)\b", re.IGNORECASE)
UNUSED: dict[tuple[str, str], str] = {
    ("observations", "z_score"): "Z-scores are not used: the protocol decides on T-scores; under 50 is R1",
    ("observations", "body_site:trochanter"): "a trochanter bodySite is neither total hip nor femoral neck",
    ("observations", "body_site:femur"): "a whole-femur bodySite is neither total hip nor femoral neck",
}


def _table_rows(table: str) -> list[dict[str, str]]:
    path = PACKAGED_DIR / KNOWLEDGE.model.code_tables[table]  # type: ignore[index]
    with Path(path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for addition in KNOWLEDGE.model.code_additions:
        if addition.table == table:
            rows.extend(addition.rows())
    return rows


CONDITION_ROWS = _table_rows("conditions")
MEDICATION_ROWS = _table_rows("medications")
OBSERVATION_ROWS = _table_rows("observations")


# ----- conditions ------------------------------------------------------------------------------------
def _condition(index: int, row: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"row{index}",
        "subject": SUBJECT,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": row["system"], "code": row["code"]}]},
        "onsetDateTime": ONSET,
    }


@pytest.fixture(scope="module")
def condition_findings() -> dict[int, ClinicalFinding]:
    resources = [_condition(i, row) for i, row in enumerate(CONDITION_ROWS)]
    parsed = parse_resources(resources, KNOWLEDGE)
    assert not parsed.unreadable
    findings = extract_findings(parsed, KNOWLEDGE)
    by_id = {int(f.resource_id.removeprefix("row")): f for f in findings}
    assert len(by_id) == len(CONDITION_ROWS), "every condition row passes the relevance filter"
    return by_id


def _expected_fracture_site(row: dict[str, str]) -> set[str] | None:
    concept, system, code = row["concept"], row["system"], row["code"]
    if system in (ICD10, ICD10CM) and code.startswith("M80.") and len(code) >= 6:
        table = M80_CM_SITE if system == ICD10CM else M80_WHO_SITE
        return {table[code[5]]}
    if concept in FRACTURE_SITE_OF_CONCEPT:
        return {FRACTURE_SITE_OF_CONCEPT[concept]}
    if concept == "osteoporotic_fracture":
        if system == SNOMED and NOT_COUNTED_WORDS.search(row["display"]):
            return {"other"}
        return set(COUNTED_FRACTURE_SITES | OSTEOPOROTIC_ONLY_SITES)
    if concept == "other_fracture_site":
        return set(COUNTED_FRACTURE_SITES | {"other"})
    return None


@pytest.mark.protocol("3b-fractures", "3b-icd-category", "R4")
def test_every_condition_row_is_classified_as_its_concept(
    condition_findings: dict[int, ClinicalFinding],
) -> None:
    wrong: list[str] = []
    for index, row in enumerate(CONDITION_ROWS):
        finding = condition_findings[index]
        label = f"{row['system']}|{row['code']} ({row['concept']})"
        if row["concept"] not in finding.concepts:
            wrong.append(f"{label}: concepts {sorted(finding.concepts)}")
            continue
        sites = _expected_fracture_site(row)
        if sites is not None and finding.fracture_site not in sites:
            wrong.append(f"{label}: site {finding.fracture_site}, expected one of {sorted(sites)}")
        if row["concept"] == "osteoporotic_fracture" and not finding.fracture_osteoporotic:
            wrong.append(f"{label}: not flagged osteoporotic")
        compact = row["code"].replace(".", "")
        if sites is not None and row["system"] == ICD10CM and len(compact) == 7:
            initial = compact[6] in "ABC"
            if finding.fracture_initial is not initial:
                wrong.append(f"{label}: initial encounter {finding.fracture_initial}, expected {initial}")
    assert not wrong, f"{len(wrong)} condition rows misclassified: {wrong[:20]}"


def _agents(decision: Decision) -> dict[str, str]:
    return {a.agent: a.status for a in decision.agents}


# Hyperparathyroidism codes the protocol names (R9a / R9c), independent of the knowledge file's mapping.
PROTOCOL_HPT = {
    "E21.0": "primary_tertiary_familial",
    "E21.2": "primary_tertiary_familial",
    "36348003": "primary_tertiary_familial",
    "78200003": "primary_tertiary_familial",
    "N25.81": "renal",
    "19034001": "renal",
    "E21.1": "secondary_non_renal",
    "E21.3": "unspecified",
    "66999008": "unspecified",
}


def _hpt_expectation(finding: ClinicalFinding, knowledge: Knowledge) -> tuple[str, str]:
    named = {PROTOCOL_HPT[code] for _, code in finding.codes if code in PROTOCOL_HPT}
    kinds = (
        named or {knowledge.hpt_type[c] for c in finding.codes if c in knowledge.hpt_type} or {"unspecified"}
    )
    if kinds & {"primary_tertiary_familial", "renal"}:
        return "SPECIALIST_REVIEW", "R9a"
    return "CONSIDER", "R12"


def _check_engine(concept: str, finding: ClinicalFinding) -> str | None:
    """None when the engine applies the concept's rule to this finding, else what went wrong."""
    record = base_record(findings=(finding,))
    if concept == "liver_disease":  # explains a raised ALP (R9b)
        labs = tuple(x for x in record.labs if x.kind != "alkaline_phosphatase")
        record = replace(record, labs=(*labs, lab("alkaline_phosphatase", "180", high="120")))
    if concept == "osteoporosis":  # R5: high risk presumed from the coded diagnosis (no T-score, no FRAX)
        bmd = tuple(dxa("2021-02-15", th_bmd="0.700", ls_bmd="0.800") + dxa("2024-05-20", th_bmd="0.701"))
        record = replace(record, bmd=bmd)
    decision = evaluate(record, KNOWLEDGE, AS_OF)
    agents = _agents(decision)
    got = (decision.outcome, decision.rule)
    pth = {agents.get("teriparatide"), agents.get("abaloparatide")}
    if (
        "bone_malignancy" in finding.concepts
    ):  # a code of two concepts: R2 comes first (e.g. myeloma osteoporosis)
        ok = got == ("SPECIALIST_REVIEW", "R2")
    elif finding.fracture_site is not None and finding.onset is None:  # Z87.310: a history code never dates
        ok = got == ("ESCALATE", "R12")
    elif concept in ("hip_fracture", "vertebral_fracture", "forearm_fracture", "humerus_fracture"):
        ok = got == ("VERY_HIGH_RISK_PATHWAY", "R4")
    elif concept in ("osteoporotic_fracture", "other_fracture_site"):
        counted = finding.fracture_site in COUNTED_FRACTURE_SITES or (
            finding.fracture_site in OSTEOPOROTIC_ONLY_SITES and finding.fracture_osteoporotic
        )
        ok = got == (("VERY_HIGH_RISK_PATHWAY", "R4") if counted else ("ESCALATE", "R12"))
    elif concept in ("ckd_stage_4_5_or_dialysis", "kidney_transplant"):
        ok = got == ("SPECIALIST_REVIEW", "renal")
    elif concept in ("myocardial_infarction", "stroke"):
        expected = "caution" if finding.onset is None else "excluded"
        ok = got == ("ESCALATE", "R12") and agents["romosozumab"] == expected
    elif concept in ("history_of_cv_event", "tia"):
        ok = got == ("ESCALATE", "R12") and agents["romosozumab"] == "caution"
    elif concept == "hyperparathyroidism":
        ok = got == _hpt_expectation(finding, KNOWLEDGE)
    elif concept in ("paget_disease_of_bone", "skeletal_radiation"):
        ok = got == ("ESCALATE", "R12") and pth == {"excluded"}
    elif concept in ("radiotherapy_any", "urolithiasis"):
        ok = got == ("ESCALATE", "R12") and pth == {"caution"}
    elif concept in ("osteonecrosis_of_jaw", "atypical_femoral_fracture"):  # §7 follow-on caution
        follow_on = {f.status for f in decision.follow_on}
        ok = got == ("ESCALATE", "R12") and follow_on == {"caution", "excluded"}
    elif concept == "hypocalcaemia":
        ok = got == ("CONSIDER", "R12") and agents["romosozumab"] == "excluded"
    elif concept == "hypercalcaemia":
        ok = got == ("SPECIALIST_REVIEW", "R9a")
    elif concept == "liver_disease":
        ok = got == ("ESCALATE", "R12") and "excluded" not in pth
    elif concept == "osteoporosis":
        ok = got[0] == "CONSIDER" and any("presumed" in r for r in decision.reasons + decision.caveats)
    else:
        return f"no engine expectation for concept {concept!r}: add one or list it in UNUSED"
    return None if ok else f"{got} agents={agents}"


@pytest.mark.protocol(
    "R2", "R4", "R5", "R9a", "R9b", "R9c", "RENAL", "6-agents", "7-plan", "3b-cv-undated", "3b-fractures"
)
def test_every_condition_row_drives_its_rule(condition_findings: dict[int, ClinicalFinding]) -> None:
    wrong: list[str] = []
    for index, row in enumerate(CONDITION_ROWS):
        problem = _check_engine(row["concept"], condition_findings[index])
        if problem:
            wrong.append(f"{row['system']}|{row['code']} ({row['concept']}): {problem}")
    assert not wrong, f"{len(wrong)} rows do not drive their rule: {wrong[:15]}"


@pytest.mark.protocol("3b-icd-category", "3b-fractures", "R4")
@pytest.mark.parametrize(
    ("system", "code", "concept", "site"),
    [
        (ICD10CM, "M88.0", "paget_disease_of_bone", None),  # ICD-10-CM via the WHO M88 category
        (ICD10CM, "M88.811", "paget_disease_of_bone", None),
        (ICD10CM, "G45.9", "tia", None),
        (ICD10CM, "G45.4", "tia", None),
        (ICD10CM, "K76.0", "liver_disease", None),
        (ICD10CM, "K70.30", "liver_disease", None),
        (ICD10CM, "S82.51XA", "other_fracture_site", "tibia_ankle"),
        (ICD10CM, "S82.891K", "other_fracture_site", "tibia_ankle"),
        (ICD10CM, "S82.001A", "other_fracture_site", "other"),  # patella: not counted
        (ICD10CM, "M48.50XA", "vertebral_fracture", "vertebra"),
        (ICD10CM, "M48.56XD", "vertebral_fracture", "vertebra"),
    ],
)
def test_category_rules_reach_codes_not_listed(
    system: str, code: str, concept: str, site: str | None
) -> None:
    findings = extract_findings(
        parse_resources([_condition(0, {"system": system, "code": code})], KNOWLEDGE), KNOWLEDGE
    )
    assert len(findings) == 1
    assert concept in findings[0].concepts
    assert findings[0].fracture_site == site


# ----- medications -----------------------------------------------------------------------------------
_ROLE = {
    "first_line_antiresorptive": "first_line",
    "anabolic": "anabolic",
    "oncology_dose": "oncology_dose",
    "other_bone_agent": "other_bone_agent",
    "supplement": "supplement",
}


def _statement(index: int, row: dict[str, str]) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": f"med{index}",
        "status": "active",
        "subject": SUBJECT,
        "medicationCodeableConcept": {"coding": [{"system": row["system"], "code": row["code"]}]},
        "effectivePeriod": {"start": "2024-01-01"},
    }


@pytest.mark.protocol("3c-brands", "4-oncology", "R6")
def test_every_medication_row_is_its_ingredient_with_role_and_strength() -> None:
    resources = [_statement(i, row) for i, row in enumerate(MEDICATION_ROWS)]
    record = extract_record(parse_resources(resources, KNOWLEDGE), KNOWLEDGE)
    by_id = {int(m.resource_id.removeprefix("med")): m for m in record.medications}
    wrong: list[str] = []
    for index, row in enumerate(MEDICATION_ROWS):
        label = f"{row['system']}|{row['code']} {row['display']!r}"
        med = by_id.get(index)
        if med is None:
            wrong.append(f"{label}: not extracted")
            continue
        ingredient = row["ingredient"].split("/")[0]
        if med.agent != ingredient:
            wrong.append(f"{label}: agent {med.agent}, table says {ingredient}")
        if med.role != _ROLE[row["role"]]:
            wrong.append(f"{label}: role {med.role}, table says {row['role']}")
        entry = KNOWLEDGE.medications[(row["system"], row["code"])]
        if entry.strength_mg is not None and med.dose_text != f"{decimal_text(entry.strength_mg)} mg":
            wrong.append(f"{label}: dose {med.dose_text!r}, table strength {row['strength']!r}")
        if med.matched_by_name:
            wrong.append(f"{label}: matched by name, not by code")
    assert not wrong, f"{len(wrong)} medication rows misread: {wrong}"


# ----- observations ----------------------------------------------------------------------------------
_BMD_SITE = {
    "total_hip": ("total_hip", None),
    "hip_left": ("total_hip", "left"),
    "hip_right": ("total_hip", "right"),
    "femur_femoral_neck": ("femoral_neck", None),
    "femur_femoral_neck_left": ("femoral_neck", "left"),
    "femur_femoral_neck_right": ("femoral_neck", "right"),
    "lumbar_spine": ("lumbar_spine", None),
    "radius_ulna": ("radius", None),
    "radius_ulna_left": ("radius", "left"),
    "radius_ulna_right": ("radius", "right"),
    "unspecified": ("unknown", None),
}
_BODY_SITE = {
    "femoral_neck": "femoral_neck",
    "hip": "total_hip",
    "hip_joint": "total_hip",
    "proximal_femur": "total_hip",
    "lumbar_spine": "lumbar_spine",
    "lumbar_vertebra": "lumbar_spine",
    "radius": "radius",
    "distal_radius": "radius",
    "radius_ulna": "radius",
    "forearm": "radius",
}
_VALUE = {
    "t_score": (Decimal("-2.6"), "{T-score}"),
    "bmd": (Decimal("0.812"), "g/cm2"),
    "frax_mof": (Decimal("21"), "%"),
    "frax_hip": (Decimal("3.5"), "%"),
    "egfr": (Decimal("75"), "mL/min/{1.73_m2}"),
    "calcium": (Decimal("9.4"), "mg/dL"),
    "albumin": (Decimal("4.0"), "g/dL"),
    "alkaline_phosphatase": (Decimal("80"), "U/L"),
    "vitamin_d_25oh": (Decimal("32"), "ng/mL"),
    "pth": (Decimal("45"), "pg/mL"),
}
BODY_SITE_PROBE = ("http://loinc.org", "46383-6")  # DXA BMD, site not in the code


def _observation(index: int, code: tuple[str, str], kind: str, **extra: Any) -> dict[str, Any]:
    value, unit = _VALUE[kind]
    if kind in ("t_score", "bmd"):  # a distinct value per row: equal values on one date are one measurement
        value += Decimal(index) / (1000 if kind == "bmd" else 100)
    resource = {
        "resourceType": "Observation",
        "id": f"obs{index}",
        "status": "final",
        "subject": SUBJECT,
        "code": {"coding": [{"system": code[0], "code": code[1]}]},
        "effectiveDateTime": "2025-03-01",
        "valueQuantity": {"value": float(value), "unit": unit},
    }
    resource.update(extra)
    return resource


def _row_key(row: dict[str, str]) -> tuple[str, str]:
    site = row["site"].split(" ")[0]
    if row["kind"] == "body_site" and site not in _BODY_SITE:
        return ("observations", f"body_site:{site}")
    return ("observations", row["kind"])


@pytest.mark.protocol("5-dxa", "3b-labs", "3c-panels")
def test_every_observation_row_is_its_kind_and_site() -> None:
    resources: list[dict[str, Any]] = []
    expected: dict[str, tuple[str, str, Any]] = {}
    reports: list[tuple[dict[str, str], dict[str, Any]]] = []
    unused = 0
    for index, row in enumerate(OBSERVATION_ROWS):
        kind, code = row["kind"], (row["system"], row["code"])
        if _row_key(row) in UNUSED:
            unused += 1
            continue
        if kind in ("t_score", "bmd"):
            resources.append(_observation(index, code, kind))
            expected[f"obs{index}"] = ("bmd", kind, _BMD_SITE.get(row["site"].split(" ")[0], ("other", None)))
        elif kind in ("frax_mof", "frax_hip"):  # FRAX results carry no id: one record per row
            alone = extract_record(parse_resources([_observation(index, code, kind)], KNOWLEDGE), KNOWLEDGE)
            want = "mof" if kind == "frax_mof" else "hip"
            assert [fx.kind for fx in alone.frax] == [want], f"{row['code']}: {alone.frax}"
        elif kind in _VALUE:
            resources.append(_observation(index, code, kind))
            expected[f"obs{index}"] = ("lab", kind, None)
        elif kind == "body_site":
            body = {"coding": [{"system": code[0], "code": code[1]}]}
            resources.append(_observation(index, BODY_SITE_PROBE, "bmd", bodySite=body))
            expected[f"obs{index}"] = ("bmd", "bmd", (_BODY_SITE[row["site"]], None))
        elif kind == "laterality":
            body = {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "29836001"},
                    {"system": code[0], "code": code[1]},
                ]
            }
            resources.append(_observation(index, BODY_SITE_PROBE, "bmd", bodySite=body))
            expected[f"obs{index}"] = ("bmd", "bmd", ("total_hip", row["site"]))
        elif kind in ("dxa_report", "dxa_procedure", "frax_panel"):
            reports.append((row, {"coding": [{"system": code[0], "code": code[1]}]}))
        else:
            pytest.fail(f"observation kind {kind!r} has no reachability check: add one or list it in UNUSED")
    record = extract_record(parse_resources(resources, KNOWLEDGE), KNOWLEDGE)
    found: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)
    for b in record.bmd:
        found[b.resource_id].append(("bmd", b.kind, (b.site, b.side)))
    for lab_result in record.labs:
        found[lab_result.resource_id].append(("lab", lab_result.kind, None))
    wrong = [
        f"{rid}: expected {exp}, found {found.get(rid)}"
        for rid, exp in expected.items()
        if exp not in found.get(rid, [])
    ]
    assert not wrong, f"{len(wrong)} observation rows misread: {wrong}"
    checker = RelevanceChecker(KNOWLEDGE, ReferencedIndex.build([]))
    for row, concept in reports:
        shape = {"resourceType": "DiagnosticReport", "status": "final", "code": concept}
        if row["kind"] == "frax_panel":
            shape = {"resourceType": "Observation", "status": "final", "code": concept}
        assert checker.is_relevant(shape), f"{row['code']} ({row['kind']}) is filtered out"
    assert unused == sum(1 for row in OBSERVATION_ROWS if _row_key(row) in UNUSED)


def test_unused_list_only_names_kinds_that_exist() -> None:
    keys = {_row_key(row) for row in OBSERVATION_ROWS}
    assert set(UNUSED) <= keys, set(UNUSED) - keys
    assert all(reason for reason in UNUSED.values())


def test_additions_are_all_cited_and_counted() -> None:
    additions = [row for a in KNOWLEDGE.model.code_additions for row in a.rows()]
    assert additions, "the knowledge file adds codes"
    assert all(re.search(r"@[0-9a-f]{12}:|^https?://", row["source"]) for row in additions), additions
