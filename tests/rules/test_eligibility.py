"""rules/eligibility.py: R2 (malignancy), R3 (on an anabolic), R5 (high risk) and R6 (first-line
exposure), one row per clinical situation. The rule functions are called directly on an Evaluation built
from clinical facts; a rule that decides raises `Finished`."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from cds_service.facts.patient_record import BmdResult, MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.decision import Decision
from cds_service.rules.eligibility import rule_anabolic, rule_first_line, rule_high_risk, rule_malignancy
from cds_service.rules.evaluation import Evaluation, Finished
from tests.clinical_builders import AS_OF, SCANNER, base_record, d, dxa, finding, frax, statement

K = packaged_knowledge()


def evaluation_of(**changes: object) -> Evaluation:
    return Evaluation(base_record(**changes), K, AS_OF)


def decided(call: Callable[[], object]) -> Decision | None:
    try:
        call()
    except Finished as finished:
        return finished.decision
    return None


def teriparatide(start: str) -> MedicationRecord:
    return statement("teriparatide", start, role="anabolic", interval_days=1)


def order(agent: str, day: str, role: str = "first_line") -> MedicationRecord:
    return MedicationRecord(
        agent,
        role,
        "request",
        "active",
        f"mr-{agent}-{day}",
        event_date=d(day),
        intent="order",  # type: ignore[arg-type]
    )


# ----- R2 -------------------------------------------------------------------------------------------
@pytest.mark.protocol("R2")
def test_bone_metastasis_is_specialist_review() -> None:
    """R2: a coded bone metastasis -> SPECIALIST_REVIEW (protocol not applicable)."""
    evaluation = evaluation_of(findings=(finding({"bone_malignancy"}, "2024-01-01", "bone metastasis"),))
    decision = decided(lambda: rule_malignancy(evaluation))
    assert decision is not None
    assert (decision.outcome, decision.rule) == ("SPECIALIST_REVIEW", "R2")
    assert decision.reasons[-1].startswith("skeletal malignancy or bone metastasis: ")


# ----- R3: an anabolic covers as_of -------------------------------------------------------------------
@pytest.mark.protocol("R3", "4-anabolic-course")
@pytest.mark.parametrize(
    ("medications", "planned_end", "card", "at_limit"),
    [
        pytest.param(
            (teriparatide("2025-01-01"),),
            "2027-01-01",
            False,
            False,
            id="R3: teriparatide started, end far off",
        ),
        pytest.param(
            (teriparatide("2023-08-31"),),
            "2025-08-30",
            True,
            False,
            id="R3 edge: planned end = as_of + 90 days -> on-anabolic card",
        ),
        pytest.param(
            (teriparatide("2023-09-01"),),
            "2025-08-31",
            False,
            False,
            id="R3 edge: planned end one day beyond the 90-day card window -> no card",
        ),
        pytest.param(
            (teriparatide("2023-05-01"),),
            "2025-04-30",
            True,
            True,
            id="R3: 730 days of PTH analogue used -> course limit reached: start the follow-on",
        ),
        pytest.param(
            (teriparatide("2023-05-01"), order("alendronate", "2025-05-01")),
            "2025-04-30",
            False,
            True,
            id="R3: at the limit but a follow-on anti-resorptive is ordered -> no card",
        ),
    ],
)
def test_on_anabolic(
    medications: tuple[MedicationRecord, ...], planned_end: str, card: bool, at_limit: bool
) -> None:
    evaluation = evaluation_of(medications=medications)
    decision = decided(lambda: rule_anabolic(evaluation))
    assert decision is not None
    assert (decision.outcome, decision.rule, decision.anabolic_agent) == ("ON_ANABOLIC", "R3", "teriparatide")
    assert decision.planned_end == d(planned_end)
    assert decision.on_anabolic_card is card
    assert ("course limit reached: start the follow-on" in decision.reasons) is at_limit


@pytest.mark.protocol("R3")
def test_anabolic_resting_on_an_order_only_asks_to_confirm_it_started() -> None:
    """R3: an anabolic supported by an order only -> "ordered <date>; ... confirm started"."""
    evaluation = evaluation_of(medications=(order("teriparatide", "2025-03-01", role="anabolic"),))
    decision = decided(lambda: rule_anabolic(evaluation))
    assert decision is not None
    assert decision.outcome == "ON_ANABOLIC"
    expected = "ordered 2025-03-01; no dispensing or administration recorded — confirm started"
    assert expected in decision.caveats


# ----- R5: high risk ----------------------------------------------------------------------------------
UNKNOWN_SITE_T = BmdResult(d("2024-05-20"), "unknown", None, "t_score", Decimal("-2.7"), SCANNER, "obs-unk")  # type: ignore[arg-type]


@pytest.mark.protocol("R5", "3b-site-unknown")
def test_t_score_of_undetermined_site_counts_for_the_diagnosis_only() -> None:
    evaluation = evaluation_of(bmd=(UNKNOWN_SITE_T,))
    assert decided(lambda: rule_high_risk(evaluation)) is None
    assert "a T-score of undetermined site was used for the diagnosis only" in evaluation.caveats


@pytest.mark.protocol("R5")
@pytest.mark.parametrize(
    ("bmd_values", "frax_values", "outcome"),
    [
        pytest.param(
            dxa("2024-05-20", th="-1.0"),
            frax("2024-05-20", mof="10", hip="3.0"),
            None,
            id="R5 edge: FRAX hip 3 % with lowest T exactly -1.0 (in (-2.5, -1.0]) -> high risk",
        ),
        pytest.param(
            dxa("2024-05-20", th="-0.9"),
            frax("2024-05-20", mof="10", hip="3.0"),
            "NOT_ELIGIBLE_NOT_HIGH_RISK",
            id="R5 edge: FRAX hip 3 % but lowest T -0.9 (normal) -> not high risk",
        ),
        pytest.param(
            dxa("2024-05-20", th="-2.0"),
            frax("2024-05-20", mof="10", hip="2.9"),
            "NOT_ELIGIBLE_NOT_HIGH_RISK",
            id="R5 edge: FRAX hip 2.9 % < 3 % -> not high risk",
        ),
        pytest.param(
            dxa("2024-05-20", th_bmd="0.75"),
            frax("2024-05-20", mof="10", hip="3.5"),
            "NOT_ELIGIBLE_NOT_HIGH_RISK",
            id="R5: FRAX hip 3.5 % but no T-score on any DXA -> low bone mass not shown",
        ),
        pytest.param(
            dxa("2024-05-20", th="-2.0"),
            frax("2024-05-20", mof="20"),
            None,
            id="R5 edge: FRAX MOF exactly 20 % -> high risk",
        ),
    ],
)
def test_high_risk_by_frax(
    bmd_values: list[BmdResult], frax_values: tuple[object, ...], outcome: str | None
) -> None:
    evaluation = evaluation_of(bmd=tuple(bmd_values), frax=frax_values)
    decision = decided(lambda: rule_high_risk(evaluation))
    assert (decision.outcome if decision else None) == outcome


# ----- R6: first-line exposure ------------------------------------------------------------------------
UNDATED_ALENDRONATE = MedicationRecord(
    "alendronate", "first_line", "administration", "completed", "ma-undated"
)


@pytest.mark.protocol("R6", "3a-blocking")
@pytest.mark.parametrize(
    ("changes", "outcome", "missing"),
    [
        pytest.param(
            {"medications": (), "any_medication_resource": False},
            "INSUFFICIENT_DATA",
            ("medication_history",),
            id="R6: no medication resources at all -> INSUFFICIENT_DATA",
        ),
        pytest.param(
            {"medications": (), "unreadable": (("MedicationStatement", 1),)},
            "INSUFFICIENT_DATA",
            ("unreadable_resources", "medication_history"),
            id="§3a: an unreadable medication entry may be the first-line drug -> INSUFFICIENT_DATA",
        ),
        pytest.param(
            {"medications": (statement("raloxifene", "2021-01-01", role="other_bone_agent"),)},
            "NOT_ELIGIBLE_NO_FIRST_LINE",
            (),
            id="R6: other drugs only -> NOT_ELIGIBLE_NO_FIRST_LINE",
        ),
        pytest.param(
            {"medications": (UNDATED_ALENDRONATE,)},
            "INSUFFICIENT_DATA",
            ("medication_history",),
            id="R6/§3a: first-line therapy without usable dates -> INSUFFICIENT_DATA",
        ),
    ],
)
def test_first_line(changes: dict[str, object], outcome: str, missing: tuple[str, ...]) -> None:
    evaluation = evaluation_of(**changes)
    decision = decided(lambda: rule_first_line(evaluation))
    assert decision is not None
    assert (decision.outcome, decision.rule, decision.missing) == (outcome, "R6", missing)


@pytest.mark.protocol("R6", "3c-brands")
def test_first_line_identified_by_name_is_flagged() -> None:
    evaluation = evaluation_of(medications=(statement("alendronate", "2021-03-01", matched_by_name=True),))
    assert rule_first_line(evaluation) == d("2021-03-01")
    assert "medication identified by name" in evaluation.caveats
