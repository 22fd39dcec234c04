"""rules/treatment.py: R9a (decides), the R9b/R9c flags, the renal gate, R10 and R13, one row per clinical
situation. The rule functions are called directly on an Evaluation built from clinical facts; a rule
that decides raises `Finished`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from cds_service.facts.patient_record import ClinicalFinding, Demographics, LabResult
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules import bmd
from cds_service.rules.decision import Decision, SiteResponse
from cds_service.rules.evaluation import Evaluation, Finished
from cds_service.rules.treatment import rule_renal_gate, rule_secondary_causes, rule_treatment
from tests.clinical_builders import AS_OF, STANDARD_LABS, administration, base_record, d, dxa, finding, lab

K = packaged_knowledge()
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


def evaluation_of(**changes: object) -> Evaluation:
    return Evaluation(base_record(**changes), K, AS_OF)


def decided(call: Callable[[], object]) -> Decision | None:
    try:
        call()
    except Finished as finished:
        return finished.decision
    return None


def with_lab(*labs: LabResult) -> tuple[LabResult, ...]:
    kinds = {x.kind for x in labs}
    return tuple(x for x in STANDARD_LABS if x.kind not in kinds) + labs


def hpt(code: str) -> ClinicalFinding:
    return finding({"hyperparathyroidism"}, "2024-01-01", f"hpt-{code}", codes=((ICD10CM, code),))


# ----- R9a decides; R9b/R9c flag ----------------------------------------------------------------------
@pytest.mark.protocol("R9a")
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param(
            {"labs": with_lab(lab("calcium", "10.3", high="10.2"))},
            "corrected calcium 10.3 mg/dL above range",
            id="R9a: corrected calcium above the reference range",
        ),
        pytest.param(
            {"findings": (hpt("E21.0"),)},
            "active primary, tertiary or familial hyperparathyroidism",
            id="R9a: active primary hyperparathyroidism (E21.0)",
        ),
    ],
)
def test_r9a_decides(changes: dict[str, object], reason: str) -> None:
    evaluation = evaluation_of(**changes)
    decision = decided(lambda: rule_secondary_causes(evaluation))
    assert decision is not None
    assert (decision.outcome, decision.rule, decision.reasons[-1]) == ("SPECIALIST_REVIEW", "R9a", reason)


@pytest.mark.protocol("R9c")
@pytest.mark.parametrize(
    ("changes", "flags"),
    [
        pytest.param(
            {"labs": with_lab(lab("calcium", "10.2", high="10.2"))},
            [],
            id="R9a edge: calcium equal to the upper limit is not above range",
        ),
        pytest.param(
            {"labs": with_lab(lab("vitamin_d_25oh", "19.9"))},
            ["R9c: 25-OH vitamin D 19.9 ng/mL < 20: correct first"],
            id="R9c: vitamin D 19.9 < 20 ng/mL",
        ),
        pytest.param(
            {"labs": with_lab(lab("vitamin_d_25oh", "20"))},
            [],
            id="R9c edge: vitamin D exactly 20 ng/mL is not low",
        ),
        pytest.param(
            {"findings": (hpt("E21.1"),)},
            ["R9c: secondary (non-renal) hyperparathyroidism: correct the cause first"],
            id="R9c: secondary non-renal hyperparathyroidism (E21.1)",
        ),
        pytest.param(
            {"findings": (hpt("E21.3"),)},
            ["R9c: hyperparathyroidism, type not recorded: clarify and correct first"],
            id="R9c: unspecified hyperparathyroidism (E21.3), calcium not above range",
        ),
        pytest.param(
            {"labs": with_lab(lab("calcium", "8.4", low="8.5", high="10.2"))},
            [
                "R9c: corrected calcium 8.4 mg/dL below range: "
                "correct first (romosozumab excluded while low)",
            ],
            id="R9c: corrected calcium below range",
        ),
    ],
)
def test_r9c_flags(changes: dict[str, object], flags: list[str]) -> None:
    evaluation = evaluation_of(**changes)
    assert rule_secondary_causes(evaluation) == flags


@pytest.mark.protocol("3a-cap", "3b-labs", "3c-comparators")
@pytest.mark.parametrize(
    ("labs", "missing", "caveat"),
    [
        pytest.param(
            with_lab(replace(lab("egfr", "25"), comparator=">")),
            ["egfr"],
            None,
            id="§3c: eGFR '>25' cannot decide the < 30 gate -> egfr missing (caps)",
        ),
        pytest.param(
            with_lab(replace(lab("calcium", "0"), readable=False, text="see note")),
            ["calcium"],
            "see note",
            id="§3c: an unreadable calcium is reported and counts as missing",
        ),
    ],
)
def test_lab_gaps(labs: tuple[LabResult, ...], missing: list[str], caveat: str | None) -> None:
    evaluation = evaluation_of(labs=labs)
    rule_secondary_causes(evaluation)
    assert evaluation.missing == missing
    if caveat:
        assert any(caveat in c for c in evaluation.caveats)


@pytest.mark.protocol("3b-labs")
def test_albumin_corrected_calcium_is_shown() -> None:
    """§3b: calcium corrected for albumin: 8.8 + 0.8 × (4.0 − 3.0) = 9.60 mg/dL in the evidence."""
    evaluation = evaluation_of(labs=with_lab(lab("calcium", "8.8", high="10.2"), lab("albumin", "3.0")))
    rule_secondary_causes(evaluation)
    assert ("Corrected calcium", "9.60 mg/dL") in evaluation.evidence.labs


# ----- renal gate ---------------------------------------------------------------------------------------
@pytest.mark.protocol("RENAL")
@pytest.mark.parametrize(
    ("findings", "reason"),
    [
        pytest.param(
            (finding({"ckd_stage_4_5_or_dialysis"}, "2023-01-01", "CKD stage 5"),),
            "renal gate: CKD stage 4-5 / end-stage renal disease",
            id="renal gate: active CKD stage 4-5 code",
        ),
        pytest.param(
            (
                finding(
                    {"ckd_stage_4_5_or_dialysis"}, "2025-03-03", "haemodialysis", resource_type="Procedure"
                ),
            ),
            "renal gate: dialysis within 90 days",
            id="renal gate edge: dialysis exactly 90 days before as_of",
        ),
        pytest.param(
            (
                finding(
                    {"ckd_stage_4_5_or_dialysis"}, "2025-03-02", "haemodialysis", resource_type="Procedure"
                ),
            ),
            None,
            id="renal gate edge: dialysis 91 days before as_of is outside the window",
        ),
    ],
)
def test_renal_gate(findings: tuple[ClinicalFinding, ...], reason: str | None) -> None:
    evaluation = evaluation_of(findings=findings)
    decision = decided(lambda: rule_renal_gate(evaluation, evaluation.agent_context()))
    if reason is None:
        assert decision is None
    else:
        assert decision is not None
        assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "renal")
        assert any(r.startswith(reason) for r in decision.reasons)


# ----- R10, R13 ---------------------------------------------------------------------------------------
def hip_response(met: bool) -> SiteResponse:
    delta = Decimal("0.20") if met else Decimal("0.10")
    return SiteResponse(
        "total_hip", d("2021-02-15"), d("2024-05-20"), delta, None, "delta_t", Decimal("0.20"), met
    )


def followup_scan(total_hip_t: str) -> bmd.Scan:
    return bmd.group_scans(tuple(dxa("2024-05-20", th=total_hip_t)), AS_OF)[0]


@pytest.mark.protocol("R10", "7-plan")
@pytest.mark.parametrize(
    ("total_hip_t", "not_reached"),
    [
        pytest.param(
            "-2.4", False, id="R10/§7: hip T -2.4 above the -2.5 target -> no 'not yet reached' line"
        ),
        pytest.param("-2.5", True, id="R10/§7 edge: hip T exactly -2.5 -> target T-score not yet reached"),
    ],
)
def test_response_met_spine_not_assessable(total_hip_t: str, not_reached: bool) -> None:
    evaluation = evaluation_of()
    decision = decided(
        lambda: rule_treatment(evaluation, hip_response(True), None, followup_scan(total_hip_t), [])
    )
    assert decision is not None
    assert (decision.outcome, decision.rule) == ("RESPONSE_MET", "R10")
    assert ("target T-score not yet reached" in decision.reasons) is not_reached


@pytest.mark.protocol("R13", "3b-prior-denosumab")
def test_prior_denosumab_with_romosozumab_excluded_is_specialist_review() -> None:
    """R13b: prior denosumab >= 12 months and romosozumab excluded (a man, off-label by default)."""
    denosumab = tuple(
        administration("denosumab", day, 183)
        for day in ("2022-01-01", "2022-07-01", "2023-01-01", "2023-07-01")
    )
    evaluation = evaluation_of(
        demographics=Demographics(date(1957, 4, 1), "male", False), medications=denosumab
    )
    decision = decided(
        lambda: rule_treatment(evaluation, hip_response(False), None, followup_scan("-2.7"), [])
    )
    assert decision is not None
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "R13")
    assert "romosozumab excluded" in decision.reasons[-1]
    assert [a.agent for a in decision.agents if a.status == "excluded"] == ["romosozumab"]
