"""Condition and procedure codes through extraction and the engine (protocol §2 gaps, §3b, §3c, §6).

Each case builds FHIR Conditions/Procedures, extracts them with the real code tables and knowledge file,
adds them to a record that otherwise escalates (scenario s01, tests/clinical_builders.base_record) and
checks the decision.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cds_service.facts.extract_findings import extract_findings
from cds_service.facts.parse import parse_resources
from cds_service.facts.patient_record import ClinicalFinding
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.knowledge.schema import ICD10, ICD10CM, SNOMED
from cds_service.rules.decision import Decision
from cds_service.rules.protocol import evaluate
from tests.clinical_builders import AS_OF, base_record, lab, statement

KNOWLEDGE = packaged_knowledge()
SUBJECT = {"reference": "Patient/p1"}
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"


def condition(
    system: str,
    code: str,
    *,
    onset: str | None = "2024-10-01",
    status: str | None = "active",
    text: str | None = None,
    display: str | None = None,
    body_site: str | None = None,
    recorded: str | None = None,
    rid: str = "c1",
) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": rid,
        "subject": SUBJECT,
        "code": {"coding": [coding], **({"text": text} if text else {})},
    }
    if onset:
        resource["onsetDateTime"] = onset
    if status:
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
    if body_site:
        resource["bodySite"] = [{"text": body_site}]
    if recorded:
        resource["recordedDate"] = recorded
    return resource


def procedure(system: str, code: str, performed: str = "2012-05-01", rid: str = "p1") -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": rid,
        "status": "completed",
        "subject": SUBJECT,
        "code": {"coding": [{"system": system, "code": code}]},
        "performedDateTime": performed,
    }


def findings(*resources: dict[str, Any]) -> tuple[ClinicalFinding, ...]:
    return extract_findings(parse_resources(list(resources), KNOWLEDGE), KNOWLEDGE)


def decide(*resources: dict[str, Any], **changes: Any) -> Decision:
    return evaluate(base_record(findings=findings(*resources), **changes), KNOWLEDGE, AS_OF)


def agents(decision: Decision) -> dict[str, str]:
    return {a.agent: a.status for a in decision.agents}


def reasons_of(decision: Decision, agent: str) -> str:
    return " | ".join(r for a in decision.agents if a.agent == agent for r in a.reasons)


def test_control_record_escalates_with_romosozumab_preferred() -> None:
    decision = decide()
    assert (decision.outcome, decision.rule) == ("ESCALATE", "R12")
    assert agents(decision)["romosozumab"] == "preferred"


# ----- R4: fracture sites (§3b) -----------------------------------------------------------------------
@pytest.mark.protocol("R4", "3b-fractures", "3b-icd-category")
@pytest.mark.parametrize(
    ("system", "code", "outcome", "possible_fragility"),
    [
        (ICD10CM, "M80.0B1A", "VERY_HIGH_RISK_PATHWAY", False),  # osteoporotic pelvis
        (ICD10CM, "M80.071A", "VERY_HIGH_RISK_PATHWAY", False),  # osteoporotic ankle and foot
        (ICD10CM, "M80.061D", "VERY_HIGH_RISK_PATHWAY", False),  # lower leg, subsequent encounter, dated
        (ICD10CM, "M80.00XA", "VERY_HIGH_RISK_PATHWAY", False),  # osteoporotic, site unspecified
        (ICD10CM, "M80.011A", "VERY_HIGH_RISK_PATHWAY", False),  # shoulder region
        (ICD10, "M80.15", "VERY_HIGH_RISK_PATHWAY", False),  # WHO: pelvic region and thigh
        (ICD10, "M80.97", "VERY_HIGH_RISK_PATHWAY", False),  # WHO: ankle and foot
        (ICD10CM, "S82.51XA", "VERY_HIGH_RISK_PATHWAY", True),  # medial malleolus: possible fragility
        (ICD10CM, "S82.201A", "VERY_HIGH_RISK_PATHWAY", True),  # tibial shaft
        (ICD10CM, "S32.401A", "VERY_HIGH_RISK_PATHWAY", True),  # acetabulum (pelvis)
        (ICD10CM, "S32.10XA", "VERY_HIGH_RISK_PATHWAY", True),  # sacrum
        (SNOMED, "704331002", "VERY_HIGH_RISK_PATHWAY", False),  # osteoporotic fracture of fibula
        (ICD10CM, "S82.001A", "ESCALATE", False),  # patella: not a counted site
        (ICD10CM, "M80.041A", "ESCALATE", False),  # osteoporotic hand: not a counted site
        (SNOMED, "704333004", "ESCALATE", False),  # osteoporotic fracture of hand
    ],
)
def test_recent_fracture_sites(system: str, code: str, outcome: str, possible_fragility: bool) -> None:
    decision = decide(condition(system, code, onset="2024-10-01"))
    assert decision.outcome == outcome, decision
    confirm = any("confirm low-trauma mechanism" in c for c in decision.caveats)
    assert confirm is possible_fragility


@pytest.mark.protocol("R4", "3b-fractures")
def test_fracture_older_than_two_years_is_not_recent() -> None:
    assert decide(condition(ICD10CM, "M80.0B1A", onset="2023-05-31")).outcome == "ESCALATE"
    assert decide(condition(ICD10CM, "M80.0B1A", onset="2023-06-01")).outcome == "VERY_HIGH_RISK_PATHWAY"


@pytest.mark.protocol("R4", "3b-dates")
def test_recorded_date_never_dates_a_fracture() -> None:
    decision = decide(condition(ICD10CM, "S82.51XA", onset=None, recorded="2025-01-10"))
    assert decision.outcome == "ESCALATE"


# ----- R4a: undated vertebral fractures with named levels (§3c) -----------------------------------------
@pytest.mark.protocol("R4", "3c-undated-history")
@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ({"text": "Wedge fracture of L1"}, {"text": "Compression fracture T12"}, "VERY_HIGH_RISK_PATHWAY"),
        ({"display": "Fracture of L2 vertebra"}, {"body_site": "L4"}, "VERY_HIGH_RISK_PATHWAY"),
        ({"body_site": "T12"}, {"body_site": "L1"}, "VERY_HIGH_RISK_PATHWAY"),
        ({"text": "Wedge fracture of L1"}, {"text": "old fracture L1"}, "ESCALATE"),  # same level
        ({"text": "Vertebral fracture"}, {"text": "Vertebral fracture"}, "ESCALATE"),  # levels not named
        ({}, {}, "ESCALATE"),
    ],
)
def test_undated_vertebral_fractures_count_by_named_level(
    first: dict[str, str], second: dict[str, str], outcome: str
) -> None:
    decision = decide(
        condition(ICD10CM, "M80.08XA", onset=None, rid="v1", **first),
        condition(ICD10CM, "M80.08XA", onset=None, rid="v2", **second),
    )
    assert decision.outcome == outcome, decision
    if outcome == "VERY_HIGH_RISK_PATHWAY":
        assert "2 distinct vertebral fractures" in decision.reasons


@pytest.mark.protocol("R4", "3c-undated-history")
def test_undated_and_dated_vertebral_fractures_at_different_levels() -> None:
    dated = condition(ICD10CM, "M80.08XA", onset="2015-03-01", text="L3 fracture", rid="v1")
    undated = condition(SNOMED, "11311361000119103", onset=None, text="T8 fracture", rid="v2")
    assert decide(dated, undated).outcome == "VERY_HIGH_RISK_PATHWAY"


@pytest.mark.protocol("R4", "3c-undated-history")
def test_undated_vertebral_fracture_never_dates_a_recent_fracture() -> None:
    decision = decide(condition(ICD10CM, "M80.08XA", onset=None, text="L1 wedge fracture"))
    assert decision.outcome == "ESCALATE"


@pytest.mark.protocol("R4", "3c-undated-history")
def test_subsequent_encounter_codes_never_add_a_distinct_vertebral_fracture() -> None:
    decision = decide(
        condition(ICD10CM, "S32.010D", onset=None, text="L1", rid="v1"),
        condition(ICD10CM, "S32.020G", onset=None, text="L2", rid="v2"),
    )
    assert decision.outcome == "ESCALATE"


# ----- §6 cardiovascular history ------------------------------------------------------------------------
@pytest.mark.protocol("6-agents", "3b-cv-undated")
@pytest.mark.parametrize(
    ("system", "code", "onset", "recorded", "status", "text"),
    [
        (ICD10CM, "I25.2", None, "2025-05-01", "caution", "confirm none in the past 12 months"),
        (ICD10CM, "I25.2", "2025-01-01", None, "caution", "confirm none in the past 12 months"),
        (ICD10CM, "Z86.73", None, "2025-05-01", "caution", "confirm none in the past 12 months"),
        (ICD10CM, "I21.4", None, "2025-05-01", "caution", "confirm none in the past 12 months"),
        (ICD10CM, "I21.4", "2024-09-01", None, "excluded", "MI or stroke within 12 months"),
        (ICD10CM, "G45.9", "2024-09-01", None, "caution", "TIA on record"),
        (ICD10CM, "G45.4", None, None, "caution", "TIA on record"),
        (SNOMED, "266257000", "2020-01-01", None, "caution", "TIA on record"),
    ],
)
def test_cv_history_codes(  # noqa: PLR0917 - one parameter per table column
    system: str, code: str, onset: str | None, recorded: str | None, status: str, text: str
) -> None:
    decision = decide(condition(system, code, onset=onset, recorded=recorded))
    assert agents(decision)["romosozumab"] == status
    assert text in reasons_of(decision, "romosozumab")
    assert agents(decision)["romosozumab"] != "preferred"


# ----- calcium disorders (R9a, R9c, §6) -------------------------------------------------------------------
@pytest.mark.protocol("R9c", "6-agents")
def test_coded_hypocalcaemia_excludes_romosozumab_and_caps() -> None:
    decision = decide(condition(ICD10CM, "E83.51"))
    assert (decision.outcome, decision.rule) == ("CONSIDER", "R12")
    assert agents(decision)["romosozumab"] == "excluded"
    assert "hypocalcaemia coded" in reasons_of(decision, "romosozumab")
    assert any(r.startswith("R9c: hypocalcaemia coded") for r in decision.reasons)


@pytest.mark.protocol("R9c", "6-agents")
def test_resolved_hypocalcaemia_changes_nothing() -> None:
    decision = decide(condition(ICD10CM, "E83.51", status="resolved"))
    assert (decision.outcome, agents(decision)["romosozumab"]) == ("ESCALATE", "preferred")


@pytest.mark.protocol("R9a")
@pytest.mark.parametrize(
    ("status", "outcome"),
    [("active", "SPECIALIST_REVIEW"), (None, "SPECIALIST_REVIEW"), ("resolved", "ESCALATE")],
)
def test_coded_hypercalcaemia_is_r9a(status: str | None, outcome: str) -> None:
    decision = decide(condition(ICD10CM, "E83.52", status=status))
    assert decision.outcome == outcome
    if outcome == "SPECIALIST_REVIEW":
        assert decision.rule == "R9a"
        assert any("hypercalcaemia coded" in r for r in decision.reasons)


@pytest.mark.protocol("R3", "6-agents")
def test_coded_hypercalcaemia_during_teriparatide_is_a_contraindication() -> None:
    on_teriparatide = (
        *base_record().medications,
        statement("teriparatide", "2025-01-01", role="anabolic", interval_days=1),
    )
    decision = decide(condition(ICD10CM, "E83.52"), medications=on_teriparatide)
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "R3")


@pytest.mark.protocol("R9a")
@pytest.mark.parametrize(("system", "code"), [(ICD10CM, "N25.81"), (SNOMED, "19034001")])
def test_hyperparathyroidism_of_renal_origin_is_r9a(system: str, code: str) -> None:
    decision = decide(condition(system, code))
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "R9a")
    assert "hyperparathyroidism of renal origin" in decision.reasons


# ----- R9b: liver disease explains a raised ALP -----------------------------------------------------------
def _raised_alp() -> tuple[Any, ...]:
    labs = tuple(x for x in base_record().labs if x.kind != "alkaline_phosphatase")
    return (*labs, lab("alkaline_phosphatase", "190", high="120"))


@pytest.mark.protocol("R9b")
@pytest.mark.parametrize(
    ("resources", "outcome", "pth_status"),
    [
        ((), "CONSIDER", "excluded"),
        ((condition(ICD10CM, "K70.30"),), "ESCALATE", "option"),
        ((condition(ICD10CM, "K76.0", onset=None),), "ESCALATE", "option"),
        ((condition(SNOMED, "19943007"),), "ESCALATE", "option"),
        ((condition(ICD10CM, "K74.60", status="resolved"),), "CONSIDER", "excluded"),
        ((condition(ICD10CM, "M88.0"),), "ESCALATE", "excluded"),  # Paget: explains, but excludes PTH
    ],
)
def test_liver_disease_explains_raised_alp(
    resources: tuple[dict[str, Any], ...], outcome: str, pth_status: str
) -> None:
    decision = decide(*resources, labs=_raised_alp())
    assert decision.outcome == outcome, decision
    assert agents(decision)["teriparatide"] == pth_status
    flagged = any(r.startswith("R9b") for r in decision.reasons)
    assert flagged is (outcome == "CONSIDER")


# ----- renal gate: kidney transplant ----------------------------------------------------------------------
@pytest.mark.protocol("RENAL")
@pytest.mark.parametrize(
    "resource",
    [
        condition(ICD10CM, "Z94.0", onset=None),
        condition(ICD10CM, "Z94.0", onset=None, status="inactive"),
        procedure(SNOMED, "70536003", performed="2009-06-01"),
        procedure(SNOMED, "175902000"),
    ],
)
def test_kidney_transplant_goes_to_specialist(resource: dict[str, Any]) -> None:
    decision = decide(resource)
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "renal")
    assert any("kidney transplant" in r for r in decision.reasons)
    assert any("post-transplant bone disease" in r for r in decision.reasons)
    assert {a.agent for a in decision.agents} == {"romosozumab", "teriparatide", "abaloparatide"}


@pytest.mark.protocol("RENAL")
def test_renal_gate_reason_order_egfr_first() -> None:
    labs = (*(x for x in base_record().labs if x.kind != "egfr"), lab("egfr", "25"))
    decision = decide(condition(ICD10CM, "Z94.0", onset=None), labs=labs)
    assert decision.rule == "renal"
    assert any(r.startswith("renal gate: eGFR 25") for r in decision.reasons)


# ----- radiotherapy (§6 PTH analogues) ---------------------------------------------------------------------
@pytest.mark.protocol("6-agents")
@pytest.mark.parametrize(
    ("resource", "status", "text"),
    [
        (procedure(SNOMED, "1156506007"), "caution", "confirm the field was not skeletal"),
        (procedure(SNOMED, "10611004"), "caution", "confirm the field was not skeletal"),
        (condition(SNOMED, "240164006"), "excluded", "skeletal radiation"),  # post-irradiation osteoporosis
    ],
)
def test_radiotherapy_and_pth_analogues(resource: dict[str, Any], status: str, text: str) -> None:
    decision = decide(resource)
    for agent in ("teriparatide", "abaloparatide"):
        assert agents(decision)[agent] == status
        assert text in reasons_of(decision, agent)
    assert agents(decision)["romosozumab"] == "preferred"


# ----- concept gaps left ------------------------------------------------------------------------------------
def test_closed_gaps_are_no_longer_listed_as_not_checked() -> None:
    lines = " ".join(KNOWLEDGE.concept_gap_lines)
    for closed in ("kidney transplant:", "liver disease:", "tibia/ankle", "hypercalcaemia (coded diagnosis)"):
        assert closed not in lines
    assert "skeletal radiotherapy procedure: not checked, no code list" in lines


def test_base_record_is_unchanged() -> None:
    assert replace(base_record(), findings=()) == base_record()
