"""rules/response.py: R7f (follow-up DXA), R7h (drug holiday), R7a (adherence) and R8 (response not
assessable), one row per clinical situation. The rule functions are called directly on an Evaluation
built from clinical facts; a rule that decides raises `Finished`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cds_service.facts.dates import Interval
from cds_service.facts.patient_record import BmdResult, MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules import bmd
from cds_service.rules.decision import Decision
from cds_service.rules.evaluation import Evaluation, Finished
from cds_service.rules.response import (
    agent_covering,
    rule_followup,
    rule_holiday_and_adherence,
    rule_response,
)
from tests.clinical_builders import AS_OF, administration, base_record, d, dxa, statement
from tests.rules.test_bmd import OTHER

K = packaged_knowledge()


def evaluation_of(
    *medications: MedicationRecord, bmd_values: tuple[BmdResult, ...] = (), **changes: object
) -> Evaluation:
    record = base_record(medications=medications, **({"bmd": bmd_values} if bmd_values else {}), **changes)
    return Evaluation(record, K, AS_OF)


def decided(call: Callable[[], object]) -> Decision | None:
    try:
        call()
    except Finished as finished:
        return finished.decision
    return None


# ----- which first-line agent covers the follow-up DXA (§6 ranking rule 1, R7h) ----------------------
@pytest.mark.protocol("R7h", "6-agents")
@pytest.mark.parametrize(
    ("medications", "day", "expected"),
    [
        pytest.param(
            (statement("alendronate", "2021-03-01"),),
            "2024-05-20",
            ("alendronate", "2021-03-01", "2025-06-01"),
            id="§6: the agent covering the DXA date",
        ),
        pytest.param(
            (
                statement("risedronate", "2022-01-01", "2023-12-31"),
                statement("alendronate", "2020-01-01", "2021-12-31"),
            ),
            "2024-05-20",
            ("risedronate", "2022-01-01", "2023-12-31"),
            id="§6: none covers it -> the one whose coverage ended last before it",
        ),
        pytest.param(
            (
                statement("alendronate", "2020-01-01", "2021-12-31"),
                statement("risedronate", "2024-06-01", "2024-12-31"),
            ),
            "2024-05-20",
            ("alendronate", "2020-01-01", "2021-12-31"),
            id="§6: coverage starting after the DXA does not count",
        ),
        pytest.param(
            (statement("teriparatide", "2022-01-01", "2023-12-31", role="anabolic", interval_days=1),),
            "2024-05-20",
            None,
            id="§6: an anabolic is not a first-line agent -> none",
        ),
    ],
)
def test_agent_covering(
    medications: tuple[MedicationRecord, ...], day: str, expected: tuple[str, str, str] | None
) -> None:
    found = agent_covering(evaluation_of(*medications), d(day))
    if expected is None:
        assert found is None
    else:
        agent, start, end = expected
        assert found == (agent, Interval(d(start), d(end)))


# ----- R7f: a follow-up DXA with total hip, not older than 24 months ----------------------------------
@pytest.mark.protocol("R7f", "3a-blocking", "5-dxa")
@pytest.mark.parametrize(
    ("scan_day", "outcome"),
    [
        pytest.param("2023-06-01", None, id="R7f/§5: follow-up exactly 24 months old is used"),
        pytest.param("2023-05-31", "INSUFFICIENT_DATA", id="R7f/§5: older than 24 months -> repeat DXA"),
    ],
)
def test_followup_age(scan_day: str, outcome: str | None) -> None:
    start = d("2020-06-01")  # follow-up window opens 2023-03-01
    evaluation = evaluation_of(statement("alendronate", "2020-06-01"))
    scans = bmd.group_scans(tuple(dxa("2020-05-01", th="-2.6") + dxa(scan_day, th="-2.5")), AS_OF)
    decision = decided(lambda: rule_followup(evaluation, start, scans))
    assert (decision.outcome if decision else None) == outcome
    if decision:
        assert (decision.rule, decision.missing) == ("R7f", ("followup_dxa",))
        assert "older than 24 months" in decision.reasons[-1]


@pytest.mark.protocol("R7f", "3a-blocking")
def test_dxa_report_without_values_is_no_followup_but_is_mentioned() -> None:
    """R7f: a DXA present only as a document gives no values: INSUFFICIENT_DATA, with a caveat naming it."""
    evaluation = evaluation_of(
        statement("alendronate", "2021-03-01"), dxa_reports_without_values=(d("2024-05-20"),)
    )
    scans = bmd.group_scans(tuple(dxa("2021-02-15", th="-2.6")), AS_OF)
    decision = decided(lambda: rule_followup(evaluation, d("2021-03-01"), scans))
    assert decision is not None
    assert (decision.outcome, decision.rule, decision.missing) == (
        "INSUFFICIENT_DATA",
        "R7f",
        ("followup_dxa",),
    )
    assert "DXA report 2024-05-20 has no discrete values" in decision.caveats
    assert decision.reasons[-1] == "DXA with total hip on or after 2023-12-01"


# ----- R7h: drug holiday, R7a: adherence -------------------------------------------------------------
DENOSUMAB_EVERY_6_MONTHS = tuple(
    administration("denosumab", day, 183)
    for day in ("2021-04-01", "2021-10-01", "2022-04-01", "2022-10-01", "2023-04-01", "2023-10-01")
)


@pytest.mark.protocol("R7h", "R7a", "4-coverage")
@pytest.mark.parametrize(
    ("medications", "start", "followup", "expected"),
    [
        pytest.param(
            (statement("alendronate", "2020-01-01", "2023-05-31"),),
            "2020-01-01",
            "2024-06-01",
            ("SPECIALIST_REVIEW", "R7h"),
            id="R7h: bisphosphonate ended > 12 months before the DXA -> drug holiday",
        ),
        pytest.param(
            (statement("alendronate", "2020-01-01", "2023-06-01"),),
            "2020-01-01",
            "2024-06-01",
            ("NOT_ELIGIBLE_ADHERENCE", "R7a"),
            id="R7h edge: ended exactly 12 months before -> no holiday; the 366-day gap is R7a",
        ),
        pytest.param(
            DENOSUMAB_EVERY_6_MONTHS,
            "2021-04-01",
            "2024-05-01",
            None,
            id="R7h edge: denosumab last injected 213 days before -> no holiday, adherent",
        ),
        pytest.param(
            DENOSUMAB_EVERY_6_MONTHS,
            "2021-04-01",
            "2024-05-02",
            ("SPECIALIST_REVIEW", "R7h"),
            id="R7h: denosumab last injected 214 days before the DXA -> drug holiday",
        ),
        pytest.param(
            (statement("denosumab", "2021-04-01", "2023-06-30"),),
            "2021-04-01",
            "2024-05-20",
            ("SPECIALIST_REVIEW", "R7h"),
            id="R7h: denosumab by statement only (no injection dates), ended long before -> holiday",
        ),
        pytest.param(
            tuple(
                administration("denosumab", day, 183)
                for day in (
                    "2021-04-01",
                    "2021-10-01",
                    "2022-07-01",
                    "2023-01-01",
                    "2023-07-01",
                    "2024-01-01",
                )
            ),
            "2021-04-01",
            "2024-05-20",
            ("NOT_ELIGIBLE_ADHERENCE", "R7a"),
            id="R7a: one denosumab inter-dose interval of 273 days > 213",
        ),
    ],
)
def test_holiday_and_adherence(
    medications: tuple[MedicationRecord, ...], start: str, followup: str, expected: tuple[str, str] | None
) -> None:
    evaluation = evaluation_of(*medications)
    decision = decided(lambda: rule_holiday_and_adherence(evaluation, d(start), d(followup)))
    assert ((decision.outcome, decision.rule) if decision else None) == expected


def test_denosumab_interval_is_named_in_the_reasons() -> None:
    """R7a: the reason names the denosumab interval and the 213-day limit."""
    medications = tuple(
        administration("denosumab", day, 183)
        for day in ("2021-04-01", "2021-10-01", "2022-07-01", "2023-01-01")
    )
    evaluation = evaluation_of(*medications)
    decision = decided(lambda: rule_holiday_and_adherence(evaluation, d("2021-04-01"), d("2023-06-01")))
    assert decision is not None
    assert "denosumab inter-dose interval 273 days > 213" in decision.reasons


# ----- R8: response not assessable ------------------------------------------------------------------
START = d("2021-03-01")
LS_ONLY_FOLLOWUP = dxa("2024-05-20", ls="-2.7")


@pytest.mark.protocol("R8", "3a-blocking", "5-dxa")
@pytest.mark.parametrize(
    ("values", "outcome", "missing"),
    [
        pytest.param(
            dxa("2024-05-20", th="-2.5", ls="-2.7"),
            "INSUFFICIENT_DATA",
            ("baseline_dxa",),
            id="R8: no baseline DXA at all",
        ),
        pytest.param(
            dxa("2021-02-15", ls="-2.9") + dxa("2024-05-20", th="-2.5", ls="-2.7"),
            "INSUFFICIENT_DATA",
            ("total_hip_baseline",),
            id="R8: baseline without total hip",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6", ls="-2.9") + LS_ONLY_FOLLOWUP,
            "INSUFFICIENT_DATA",
            ("total_hip_followup",),
            id="R8: follow-up without total hip",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6") + dxa("2024-05-20", th_bmd="0.80"),
            "INSUFFICIENT_DATA",
            ("total_hip_followup",),
            id="R8: total hip T-score at baseline, only g/cm² at follow-up -> not comparable",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6") + dxa("2024-05-20", th="-2.5", scanner=OTHER),
            "SPECIALIST_REVIEW",
            (),
            id="R8: total hip scanner change",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6", ls="-2.9")
            + dxa("2024-05-20", th="-2.5")
            + dxa("2024-05-20", ls="-2.4", scanner=OTHER),
            "SPECIALIST_REVIEW",
            (),
            id="R8: lumbar spine measured on another scanner at follow-up",
        ),
    ],
)
def test_response_not_assessable(values: list[BmdResult], outcome: str, missing: tuple[str, ...]) -> None:
    evaluation = evaluation_of(statement("alendronate", "2021-03-01"))
    scans = bmd.group_scans(tuple(values), AS_OF)
    fresh = bmd.followup_candidates(scans, START, AS_OF, K)
    decision = decided(lambda: rule_response(evaluation, START, scans, fresh))
    assert decision is not None
    assert (decision.outcome, decision.rule, decision.missing) == (outcome, "R8", missing)
    if outcome == "SPECIALIST_REVIEW":
        assert "scanner changed between DXAs" in decision.reasons[-1]


@pytest.mark.protocol("R8", "5-dxa")
@pytest.mark.parametrize(
    ("values", "spine_assessed", "evidence_dates"),
    [
        pytest.param(
            dxa("2021-02-15", th="-2.6", ls="-2.9") + dxa("2024-05-20", th="-2.5", ls="-2.7"),
            True,
            {"2021-02-15", "2024-05-20"},
            id="§5: hip and spine on the same scans",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6")
            + dxa("2021-03-10", ls="-2.9")
            + dxa("2024-05-20", th="-2.5")
            + dxa("2024-06-01", ls="-2.3"),
            True,
            {"2021-02-15", "2021-03-10", "2024-05-20", "2024-06-01"},
            id="§5 per site: spine baseline and follow-up on other dates are shown too",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6") + dxa("2024-05-20", th="-2.5", ls="-2.7"),
            False,
            {"2021-02-15", "2024-05-20"},
            id="§5: spine missing at baseline -> decided on the total hip alone",
        ),
        pytest.param(
            dxa("2021-02-15", th="-2.6", ls="-2.9") + dxa("2024-05-20", th="-2.5", ls_bmd="0.9"),
            False,
            {"2021-02-15", "2024-05-20"},
            id="§5: spine values not comparable -> decided on the total hip alone",
        ),
    ],
)
def test_response_assessed(values: list[BmdResult], spine_assessed: bool, evidence_dates: set[str]) -> None:
    evaluation = evaluation_of(statement("alendronate", "2021-03-01"))
    scans = bmd.group_scans(tuple(values), AS_OF)
    fresh = bmd.followup_candidates(scans, START, AS_OF, K)
    total_hip, lumbar_spine, followup = rule_response(evaluation, START, scans, fresh)
    assert total_hip.site == "total_hip" and total_hip.delta_t is not None
    assert (lumbar_spine is not None) is spine_assessed
    assert (
        "spine not assessable: decided on the total hip alone" in evaluation.caveats
    ) is not spine_assessed
    assert {e.date.isoformat() for e in evaluation.evidence.dxa} == evidence_dates
    assert followup.date == d("2024-05-20")
