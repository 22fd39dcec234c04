"""Condition, Procedure and AllergyIntolerance -> `ClinicalFinding` (protocol §2, §3b).

Onset is `onset[x]` (Condition, AllergyIntolerance) or `performed[x]` (Procedure), never
`recordedDate`; history-of codes (Z87.310, history of MI, ...) never date an event.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Literal, NamedTuple, get_args

from cds_service.facts.code_match import (
    FRACTURE_CONCEPTS,
    SITE_CONCEPT,
    icd_cm_initial_encounter,
    icd_fracture_site,
    is_history_code,
    is_icd,
    is_icd_cancer,
    is_osteoporotic_icd,
    is_snomed_malignancy,
    site_of_fracture_concepts,
    snomed_fracture_site,
)
from cds_service.facts.extract_common import calendar_date, codings, concept_texts, first_text
from cds_service.facts.extract_medications import agents_named
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.patient_record import ClinicalFinding, FractureSite
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import SNOMED

_ACTIVE_ALLERGY = frozenset({"active"})
_FRACTURE_SITES: frozenset[str] = frozenset(get_args(FractureSite))
_LEVEL = re.compile(r"\b([CTL])\s?(\d{1,2})\b")
_LEVEL_MAX = {"C": 7, "T": 12, "L": 5}
# ICD-10-CM S32.01-S32.05: fracture of the first..fifth lumbar vertebra.
_ICD_LUMBAR_LEVEL = re.compile(r"^S32\.0([1-5])")


def extract_findings(parsed: ParsedResources, knowledge: Knowledge) -> tuple[ClinicalFinding, ...]:
    findings: list[ClinicalFinding] = []
    for condition in parsed.conditions:
        onset = condition.onsetDateTime or _period_start(condition.onsetPeriod)
        findings.append(
            _finding(
                "Condition",
                condition,
                onset=onset,
                recorded=condition.recordedDate,
                clinical_status=condition.clinicalStatus,
                knowledge=knowledge,
            )
        )
    for procedure in parsed.procedures:
        performed = procedure.performedDateTime or _period_start(procedure.performedPeriod)
        findings.append(
            _finding(
                "Procedure",
                procedure,
                onset=performed,
                recorded=None,
                clinical_status=None,
                knowledge=knowledge,
            )
        )
    for allergy in parsed.allergies:
        finding = _allergy(allergy, knowledge)
        if finding is not None:
            findings.append(finding)
    return tuple(findings)


def _period_start(period: Any) -> Any:
    return period.start if period is not None else None


def _status_code(concept: Any) -> str | None:
    found = [code for _, code, _ in codings(concept) if code]
    return found[0] if found else None


class _Code(NamedTuple):
    """One coding of a finding with what the code tables say of it, looked up once."""

    system: str
    code: str
    display: str
    concepts: frozenset[str]  # knowledge.condition_concepts
    icd_site: str | None  # icd_fracture_site
    table_display: str  # knowledge.condition_display, "" when the table has none


def _finding(
    resource_type: Literal["Condition", "Procedure", "AllergyIntolerance"],
    resource: Any,
    *,
    onset: Any,
    recorded: Any,
    clinical_status: Any,
    knowledge: Knowledge,
) -> ClinicalFinding:
    plain = codings(resource.code)
    coded = [
        _Code(
            system,
            code,
            display,
            knowledge.condition_concepts(system, code),
            icd_fracture_site(system, code, knowledge),
            knowledge.condition_display(system, code) or "",
        )
        for system, code, display in plain
    ]
    concepts = _concepts(coded)
    texts = concept_texts(resource.code, plain)
    # An AllergyIntolerance has no bodySite (a FHIR model raises, costly, for an element it lacks).
    body_sites = resource.bodySite if resource_type != "AllergyIntolerance" else None
    site_texts = [text for site in body_sites or () for text in concept_texts(site)]
    fracture_site = _fracture_site(coded, concepts, knowledge)
    if fracture_site is not None and fracture_site in SITE_CONCEPT:
        concepts |= {SITE_CONCEPT[fracture_site]}
    return ClinicalFinding(
        resource_type=resource_type,
        resource_id=resource.id or "",
        concepts=frozenset(concepts),
        codes=tuple((c.system, c.code) for c in coded if c.system and c.code),
        label=first_text(texts) or _table_display(coded),
        onset=None if _only_history_codes(coded) else calendar_date(onset),
        recorded=calendar_date(recorded),
        clinical_status=_status_code(clinical_status),
        is_cancer=_is_cancer(coded, concepts),
        fracture_site=fracture_site,
        fracture_initial=_fracture_initial(coded) if fracture_site is not None else None,
        fracture_osteoporotic="osteoporotic_fracture" in concepts
        or any(is_osteoporotic_icd(c.system, c.code) for c in coded),
        vertebral_level=_vertebral_level(coded, texts + site_texts) if fracture_site == "vertebra" else None,
    )


def _table_display(coded: list[_Code]) -> str:
    """The code table's display of the first known coding: a label when the resource sends none."""
    return next((c.table_display for c in coded if c.table_display), "")


def _concepts(coded: list[_Code]) -> set[str]:
    found: set[str] = set()
    for code in coded:
        found |= code.concepts
    return found


def _only_history_codes(coded: list[_Code]) -> bool:
    """True when every coding that means something to the protocol is a history-of code."""
    meaningful = [c for c in coded if c.concepts or c.icd_site or is_icd_cancer(c.system, c.code)]
    return bool(meaningful) and all(
        is_history_code(c.system, c.code, c.concepts, c.display or c.table_display) for c in meaningful
    )


def _is_cancer(coded: list[_Code], concepts: set[str]) -> bool:
    if "bone_malignancy" in concepts:
        return True
    for code in coded:
        if is_icd_cancer(code.system, code.code):
            return True
        if is_snomed_malignancy(code.system, code.display) or is_snomed_malignancy(
            code.system, code.table_display
        ):
            return True
    return False


def _fracture_site(coded: list[_Code], concepts: set[str], knowledge: Knowledge) -> FractureSite | None:
    """ICD prefix first; then SNOMED words of fracture-concept codes; then the site concept."""
    for code in coded:
        if code.icd_site is not None:
            return _as_site(code.icd_site)
    if not concepts & FRACTURE_CONCEPTS:
        return None
    for code in coded:
        if code.system != SNOMED or not code.concepts & FRACTURE_CONCEPTS:
            continue
        for text in (code.table_display, code.display):
            site = snomed_fracture_site(text, knowledge)
            if site is not None:
                return _as_site(site)
    by_concept = site_of_fracture_concepts(frozenset(concepts))
    if by_concept is not None:
        return _as_site(by_concept)
    # Coded as osteoporotic but no site in the code: a fragility fracture at an unrecorded site (§3b).
    return "unspecified" if "osteoporotic_fracture" in concepts else "other"


def _as_site(site: str) -> FractureSite:
    return site if site in _FRACTURE_SITES else "other"  # type: ignore[return-value]


def _fracture_initial(coded: list[_Code]) -> bool | None:
    for code in coded:
        if is_icd(code.system) and (code.icd_site or code.concepts & FRACTURE_CONCEPTS):
            initial = icd_cm_initial_encounter(code.system, code.code)
            if initial is not None:
                return initial
    return None


def _vertebral_level(coded: list[_Code], texts: list[str]) -> str | None:
    for text in texts:
        for letter, number in _LEVEL.findall(text.upper()):
            if 1 <= int(number) <= _LEVEL_MAX[letter]:
                return f"{letter}{int(number)}"
    for code in coded:
        match = _ICD_LUMBAR_LEVEL.match(code.code) if is_icd(code.system) else None
        if match:
            return f"L{match.group(1)}"
    return None


def _allergy(allergy: Any, knowledge: Knowledge) -> ClinicalFinding | None:
    """An active (or status-less) allergy to a bone agent; inactive/resolved allergies are skipped."""
    status = _status_code(allergy.clinicalStatus)
    if status is not None and status not in _ACTIVE_ALLERGY:
        return None
    concepts = [allergy.code] + [
        reaction.substance for reaction in allergy.reaction or () if reaction.substance is not None
    ]
    agents = agents_named([c for c in concepts if c is not None], knowledge)
    if not agents:
        return None
    onset = allergy.onsetDateTime or _period_start(allergy.onsetPeriod)
    finding = _finding(
        "AllergyIntolerance",
        allergy,
        onset=onset,
        recorded=allergy.recordedDate,
        clinical_status=allergy.clinicalStatus,
        knowledge=knowledge,
    )
    label = finding.label or ", ".join(sorted(agents))
    return replace(finding, allergy_agents=agents, label=label)
