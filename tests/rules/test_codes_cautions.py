"""Caution codes closed from the protocol's gap list (§2): osteonecrosis of the jaw and atypical femoral
fracture (follow-on caution, §7) and urolithiasis (PTH-analogue caution, §6), through extraction with the
real code tables and knowledge file, on a record that otherwise escalates (scenario s01).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.facts.patient_record import Demographics
from cds_service.knowledge.schema import ICD10, ICD10CM
from cds_service.rules.decision import Decision
from tests.rules.test_codes_engine import KNOWLEDGE, agents, condition, decide, reasons_of

ONJ = "osteonecrosis of the jaw on record"
AFF = "atypical femoral fracture on record"
URO = "urolithiasis on record"
PTH = ("teriparatide", "abaloparatide")
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def follow_on(decision: Decision) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {f.agent: (f.status, f.reasons) for f in decision.follow_on}


def assert_follow_on_caution(decision: Decision, text: str) -> None:
    """Every follow-on agent the eGFR band allows carries the caution; the excluded ones stay excluded."""
    control = follow_on(decide())
    changed = follow_on(decision)
    assert set(changed) == set(control)
    for agent, (status, reasons) in changed.items():
        if control[agent][0] == "excluded":
            assert (status, reasons) == control[agent], agent
        else:
            assert status == "caution", (agent, status)
            assert any(r.startswith(text) for r in reasons), (agent, reasons)


def test_control_record_has_no_caution_anywhere() -> None:
    decision = decide()
    assert {s for s, _ in follow_on(decision).values()} == {"option", "excluded"}
    assert {agents(decision)[a] for a in PTH} == {"option"}


# ----- §7: osteonecrosis of the jaw, atypical femoral fracture ----------------------------------------
@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize("status", ["active", "resolved", None])
def test_osteonecrosis_of_the_jaw_is_a_follow_on_caution(status: str | None) -> None:
    decision = decide(condition(ICD10CM, "M87.180", status=status, display="Osteonecrosis due to drugs, jaw"))
    assert_follow_on_caution(decision, ONJ)
    assert (decision.outcome, agents(decision)["romosozumab"]) == ("ESCALATE", "preferred")


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize("code", ["M84.750A", "M84.754A", "M84.759S", "M84752D", "m84.757k"])
def test_atypical_femoral_fracture_is_a_follow_on_caution(code: str) -> None:
    decision = decide(condition(ICD10CM, code, onset="2024-11-01"))
    assert_follow_on_caution(decision, AFF)


@pytest.mark.protocol("7-plan", "R4")
def test_recent_atypical_femoral_fracture_is_not_an_r4_fracture() -> None:
    """Interpretation in the knowledge file: an AFF code is a caution, not a counted fracture site."""
    decision = decide(condition(ICD10CM, "M84.754A", onset="2025-01-15"))
    assert (decision.outcome, decision.rule) == ("ESCALATE", "R12")
    assert not any("low-trauma" in c for c in decision.caveats)


@pytest.mark.protocol("7-plan")
def test_both_findings_give_both_reasons() -> None:
    decision = decide(
        condition(ICD10CM, "M87.180", rid="c1", text="MRONJ"),
        condition(ICD10CM, "M84.751A", rid="c2", text="Atypical femur fracture right"),
    )
    reasons = follow_on(decision)["denosumab"][1]
    assert any(r.startswith(ONJ + ": MRONJ") for r in reasons)
    assert any(r.startswith(AFF + ": Atypical femur fracture right") for r in reasons)


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("M87.188", "active"),  # osteonecrosis due to drugs, other site: not the jaw
        ("M84.40XA", "active"),  # pathological fracture: not atypical
    ],
)
def test_other_codes_add_no_caution(code: str, status: str) -> None:
    assert follow_on(decide(condition(ICD10CM, code, status=status))) == follow_on(decide())


@pytest.mark.protocol("7-plan")
def test_refuted_osteonecrosis_of_the_jaw_adds_no_caution() -> None:
    """A refuted Condition is ignored (§2): verificationStatus refuted."""
    refuted = {
        **condition(ICD10CM, "M87.180"),
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "refuted"}]},
    }
    assert follow_on(decide(refuted)) == follow_on(decide())


@pytest.mark.protocol("7-plan")
def test_caution_does_not_reopen_an_agent_the_egfr_band_excludes() -> None:
    decision = decide(condition(ICD10CM, "M87.180"))
    statuses = {agent: status for agent, (status, _) in follow_on(decision).items()}
    assert statuses["risedronate"] == statuses["ibandronate"] == "excluded"


# ----- §6: urolithiasis ---------------------------------------------------------------------------------
@pytest.mark.protocol("6-agents", "3b-icd-category")
@pytest.mark.parametrize(
    ("system", "code", "status"),
    [
        (ICD10, "N20", "active"),
        (ICD10, "N20.0", "active"),
        (ICD10CM, "N20.0", "active"),  # ICD-10-CM through the WHO category (§3b)
        (ICD10CM, "N20.2", "resolved"),
        (ICD10CM, "N21.0", None),
        (ICD10CM, "N22", "active"),
        (ICD10CM, "Z87.442", "active"),  # history of urinary calculi
    ],
)
def test_urolithiasis_is_a_pth_analogue_caution(system: str, code: str, status: str | None) -> None:
    decision = decide(condition(system, code, status=status, text="Kidney stones"))
    for agent in PTH:
        assert agents(decision)[agent] == "caution"
        assert URO + ": Kidney stones" in reasons_of(decision, agent)
    assert (decision.outcome, agents(decision)["romosozumab"]) == ("ESCALATE", "preferred")
    assert follow_on(decision) == follow_on(decide())


@pytest.mark.protocol("6-agents")
def test_urolithiasis_takes_preferred_from_a_man_s_teriparatide() -> None:
    """Men: teriparatide ranks first (§6 rule 2), preferred only without a caution (rule 4)."""
    man = Demographics(date(1957, 4, 1), "male", False)
    control = decide(demographics=man)
    decision = decide(condition(ICD10CM, "N20.0", text="Nephrolithiasis"), demographics=man)
    first = [a for a in decision.agents if a.rank == 1]
    assert agents(control)["teriparatide"] == "preferred"
    assert (first[0].agent, first[0].status) == ("teriparatide", "caution")
    assert agents(decision)["abaloparatide"] == "caution"


@pytest.mark.protocol("6-agents")
@pytest.mark.parametrize("code", ["N23", "N28.1"])  # renal colic, cyst of kidney: not urolithiasis
def test_other_kidney_codes_add_no_caution(code: str) -> None:
    assert {agents(decide(condition(ICD10CM, code)))[a] for a in PTH} == {"option"}


# ----- metamorphic: WHO ICD-10 and ICD-10-CM forms of the same fact -------------------------------------
@pytest.mark.protocol("3b-icd-category", "6-agents")
@pytest.mark.parametrize("code", ["N20.0", "N21.1", "N20"])
def test_who_and_cm_forms_of_urolithiasis_decide_the_same(code: str) -> None:
    def as_json(system: str) -> dict[str, Any]:
        return decide(condition(system, code, text="Urinary calculus")).to_json()

    assert as_json(ICD10) == as_json(ICD10CM)
    assert as_json(ICD10) != decide().to_json()


# ----- the card's not-checked line ------------------------------------------------------------------------
def test_closed_concepts_are_no_longer_listed_as_unchecked() -> None:
    lines = KNOWLEDGE.concept_gap_lines
    for concept in ("urolithiasis", "osteonecrosis of the jaw", "atypical femoral fracture"):
        assert not any(line.startswith(concept + ":") for line in lines), lines
    gaps = {gap.concept: gap.checked for gap in KNOWLEDGE.model.concept_gaps}
    snomed_only = next(concept for concept in gaps if concept.startswith("SNOMED CT codes for urolithiasis"))
    assert "osteonecrosis of the jaw, atypical femoral fracture" in snomed_only
    assert gaps[snomed_only] == "ICD codes, SNOMED 399211009 and calcium results checked"
