"""Table-driven tests of the decision table at its boundaries (exact thresholds, inclusive windows,
rounding, month arithmetic). Facts are built directly: no FHIR, no HTTP, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from cds_service.facts.patient_record import Demographics, PatientRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.protocol import evaluate
from tests.clinical_builders import (
    AS_OF,
    STANDARD_LABS,
    administration,
    base_record,
    d,
    dispense,
    dxa,
    finding,
    frax,
    lab,
    statement,
)

K = packaged_knowledge()


def outcome(record: PatientRecord, as_of: date = AS_OF) -> str:
    return evaluate(record, K, as_of).outcome


@pytest.mark.protocol("R12", "6-agents")
def test_base_record_escalates() -> None:
    decision = evaluate(base_record(), K, AS_OF)
    assert decision.outcome == "ESCALATE"
    assert decision.rule == "R12"
    assert [a.agent for a in decision.agents if a.rank == 1] == ["romosozumab"]
    assert decision.missing == ()
    assert decision.suggestions_allowed


# ----- R7: therapy start + 33 months, same day, clamped to month end -------------------------------
@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ("2022-09-01", "ESCALATE"),  # + 33 months = 2025-06-01 = as_of: eligible (window inclusive)
        ("2022-09-02", "NOT_ELIGIBLE_DURATION"),  # one day short
        ("2022-08-31", "ESCALATE"),
    ],
)
@pytest.mark.protocol("R7", "3b-months", "3b-therapy-start")
def test_duration_boundary(start: str, expected: str) -> None:
    record = base_record(
        medications=(statement("alendronate", start),),
        bmd=tuple(
            dxa("2022-08-15", th="-2.6", ls="-2.9", fn="-2.7")
            + dxa("2025-06-01", th="-2.5", ls="-2.7", fn="-2.6")
        ),
    )
    decision = evaluate(record, K, AS_OF)
    assert decision.outcome == expected, decision.reasons
    if expected == "NOT_ELIGIBLE_DURATION":
        assert decision.reevaluate_from == date(2025, 6, 2)


@pytest.mark.protocol("R7", "3b-months")
def test_reevaluate_date_clamps_to_month_end() -> None:
    record = base_record(medications=(statement("alendronate", "2023-05-31"),))
    decision = evaluate(record, K, AS_OF)
    assert decision.outcome == "NOT_ELIGIBLE_DURATION"
    assert decision.reevaluate_from == date(2026, 2, 28)  # 2023-05-31 + 33 months, clamped


# ----- R10: targets after rounding half-up to 0.01 (Decimal, not float) -----------------------------
@pytest.mark.parametrize(
    ("th2", "ls2", "expected"),
    [
        ("-2.40", "-2.40", "RESPONSE_MET"),  # ΔTH +0.20, ΔLS +0.50: exactly on the targets
        ("-2.41", "-2.40", "ESCALATE"),  # ΔTH +0.19
        ("-2.40", "-2.41", "ESCALATE"),  # ΔLS +0.49
        ("-2.395", "-2.395", "RESPONSE_MET"),  # +0.205 rounds half-up to +0.21
        ("-2.405", "-2.405", "RESPONSE_MET"),  # +0.195 rounds half-up to +0.20 / +0.495 -> +0.50
        ("-2.406", "-2.40", "ESCALATE"),  # +0.194 -> +0.19
    ],
)
@pytest.mark.protocol("R10", "R12", "5-dxa")
def test_delta_t_targets(th2: str, ls2: str, expected: str) -> None:
    record = base_record(
        bmd=tuple(
            dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7") + dxa("2024-05-20", th=th2, ls=ls2, fn="-2.6")
        )
    )
    assert outcome(record) == expected


@pytest.mark.protocol("3b-rounding", "R10")
def test_float_trap_minus_2_7_minus_2_9() -> None:
    # -2.7 - (-2.9) is 0.1999... in binary floating point: must count as +0.20.
    record = base_record(
        bmd=tuple(
            dxa("2021-02-15", th="-2.9", ls="-3.1", fn="-3.0")
            + dxa("2024-05-20", th="-2.7", ls="-2.6", fn="-2.8")
        )
    )
    assert outcome(record) == "RESPONSE_MET"


@pytest.mark.parametrize(("th_bmd2", "expected"), [("0.6695", "RESPONSE_MET"), ("0.6690", "ESCALATE")])
@pytest.mark.protocol("5-dxa", "R10")
def test_percent_change_decides_when_bmd_on_same_scanner(th_bmd2: str, expected: str) -> None:
    # 0.65 -> 0.6695 is +3.0 % (met) while ΔT is 0 (not met): % change decides. 0.6690 is +2.9 %.
    base = dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7", th_bmd="0.65", ls_bmd="0.80")
    follow = dxa("2024-05-20", th="-2.6", ls="-2.9", fn="-2.6", th_bmd=th_bmd2, ls_bmd="0.848")
    decision = evaluate(base_record(bmd=tuple(base + follow)), K, AS_OF)
    th = decision.evidence.responses[0]
    assert th.metric == "pct"
    assert th.delta_t == 0
    assert decision.outcome == expected
    assert any(c.startswith("total hip: % change and ΔT disagree") for c in decision.caveats) is (
        expected == "RESPONSE_MET"
    )


@pytest.mark.parametrize(("ls_bmd2", "met"), [("0.848", True), ("0.8476", True), ("0.8475", False)])
@pytest.mark.protocol("3b-rounding", "5-dxa")
def test_percent_rounding_half_up_to_tenth(ls_bmd2: str, met: bool) -> None:
    # 0.8476/0.80 = +5.95 % -> +6.0 (met); 0.8475/0.80 = +5.9375 -> +5.9 (not met)
    base = dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.7", th_bmd="0.65", ls_bmd="0.80")
    follow = dxa("2024-05-20", th="-2.4", ls="-2.8", fn="-2.6", th_bmd="0.68", ls_bmd=ls_bmd2)
    decision = evaluate(base_record(bmd=tuple(base + follow)), K, AS_OF)
    ls = decision.evidence.responses[1]
    assert ls.metric == "pct" and ls.met is met
    assert decision.outcome == ("RESPONSE_MET" if met else "ESCALATE")


# ----- R5: high risk at the exact thresholds --------------------------------------------------------
def _not_low_t(**kw: str) -> PatientRecord:
    return base_record(
        bmd=tuple(
            dxa("2021-02-15", th="-2.0", ls="-2.2", fn="-2.3")
            + dxa("2024-05-20", th="-1.9", ls="-2.1", fn="-2.2")
        ),
        **kw,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mof", "hip", "expected_eligible"),
    [("20.0", None, True), ("19.9", None, False), ("19.9", "3.0", True), ("19.9", "2.9", False)],
)
@pytest.mark.protocol("R5")
def test_frax_thresholds(mof: str, hip: str | None, expected_eligible: bool) -> None:
    record = replace(_not_low_t(), frax=frax("2024-05-20", mof=mof, hip=hip))
    result = outcome(record)
    assert (result != "NOT_ELIGIBLE_NOT_HIGH_RISK") is expected_eligible, result


@pytest.mark.parametrize(("t", "eligible"), [("-2.5", True), ("-2.49", False)])
@pytest.mark.protocol("R5")
def test_t_score_threshold(t: str, eligible: bool) -> None:
    record = base_record(
        bmd=tuple(
            dxa("2021-02-15", th="-2.0", ls=t, fn="-2.3") + dxa("2024-05-20", th="-1.9", ls="-2.1", fn="-2.2")
        )
    )
    assert (outcome(record) != "NOT_ELIGIBLE_NOT_HIGH_RISK") is eligible


@pytest.mark.protocol("R5")
def test_frax_hip_needs_low_bone_mass_on_latest_dxa() -> None:
    record = replace(
        _not_low_t(),
        bmd=tuple(
            dxa("2021-02-15", th="-0.5", ls="-0.6", fn="-0.7")
            + dxa("2024-05-20", th="-0.9", ls="-0.8", fn="-0.9")
        ),
        frax=frax("2024-05-20", mof="10", hip="3.5"),
    )
    assert outcome(record) == "NOT_ELIGIBLE_NOT_HIGH_RISK"  # lowest T -0.9 > -1.0


@pytest.mark.protocol("R5", "3a-blocking")
def test_no_bmd_no_frax_no_diagnosis_is_insufficient() -> None:
    decision = evaluate(base_record(bmd=()), K, AS_OF)
    assert decision.outcome == "INSUFFICIENT_DATA"
    assert decision.missing == ("bmd_or_frax",)


# ----- R4: very-high-risk fractures -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("onset", "expected"),
    [
        ("2023-06-01", "VERY_HIGH_RISK_PATHWAY"),
        ("2023-05-31", "ESCALATE"),
        ("2025-06-01", "VERY_HIGH_RISK_PATHWAY"),
    ],
)
@pytest.mark.protocol("R4", "3b-fractures", "3b-months")
def test_recent_fracture_window_inclusive(onset: str, expected: str) -> None:
    wrist = finding(
        {"forearm_fracture"}, onset, "Colles fracture", fracture_site="forearm", fracture_initial=True
    )
    assert outcome(base_record(findings=(wrist,))) == expected


@pytest.mark.parametrize(
    ("second", "expected"), [("2016-05-31", "VERY_HIGH_RISK_PATHWAY"), ("2016-05-30", "ESCALATE")]
)
@pytest.mark.protocol("R4", "3b-fractures")
def test_distinct_vertebral_fractures_more_than_90_days_apart(second: str, expected: str) -> None:
    v1 = finding({"vertebral_fracture"}, "2016-03-01", "v1", fracture_site="vertebra", fracture_initial=True)
    v2 = finding({"vertebral_fracture"}, second, "v2", fracture_site="vertebra", fracture_initial=True)
    assert outcome(base_record(findings=(v1, v2))) == expected  # 91 days apart counts, 90 does not


@pytest.mark.protocol("R4", "3b-fractures")
def test_subsequent_encounter_is_the_same_fracture() -> None:
    v1 = finding({"vertebral_fracture"}, "2016-03-01", "v1", fracture_site="vertebra", fracture_initial=True)
    v2 = finding(
        {"vertebral_fracture"},
        "2019-03-01",
        "v1 seen again",
        fracture_site="vertebra",
        fracture_initial=False,
    )
    assert outcome(base_record(findings=(v1, v2))) == "ESCALATE"


@pytest.mark.protocol("R4", "3b-fractures")
def test_history_code_never_dates_a_fracture() -> None:
    hip = finding(
        {"hip_fracture"}, None, "history of hip fracture", fracture_site="hip_femur", recorded=d("2025-01-01")
    )
    decision = evaluate(base_record(findings=(hip,)), K, AS_OF)
    assert decision.outcome == "ESCALATE"
    assert decision.evidence.target_t == K.t.personalised_target_t_after_fracture


# ----- R7a adherence ---------------------------------------------------------------------------------
def _dispenses(gap_days: int) -> tuple[object, ...]:
    # 84-day fills from 2021-01-01; one gap of `gap_days` uncovered days in 2022.
    recs = []
    day = d("2021-01-01")
    from datetime import timedelta

    while day <= d("2024-06-01"):
        recs.append(dispense("alendronate", day.isoformat(), 84))
        day += timedelta(days=84)
        if d("2022-03-01") <= day < d("2022-05-25"):
            day += timedelta(days=gap_days)
    return tuple(recs)


@pytest.mark.parametrize(("gap", "expected"), [(90, "ESCALATE"), (91, "NOT_ELIGIBLE_ADHERENCE")])
@pytest.mark.protocol("R7a", "4-coverage")
def test_adherence_gap_boundary(gap: int, expected: str) -> None:
    record = base_record(
        medications=_dispenses(gap),  # type: ignore[arg-type]
        bmd=tuple(
            dxa("2020-12-10", th="-2.6", ls="-2.9", fn="-2.7")
            + dxa("2024-06-01", th="-2.5", ls="-2.7", fn="-2.6")
        ),
    )
    decision = evaluate(record, K, AS_OF)
    assert decision.outcome == expected, decision.reasons
    assert decision.evidence.exposure is not None


@pytest.mark.parametrize(
    ("second_dose", "expected"), [("2021-08-15", "ESCALATE"), ("2021-08-16", "NOT_ELIGIBLE_ADHERENCE")]
)
@pytest.mark.protocol("R7a")
def test_denosumab_interval_213_days(second_dose: str, expected: str) -> None:
    # 2021-01-14 -> 2021-08-15 is 213 days (allowed); 214 days is late.
    doses = [
        "2021-01-14",
        second_dose,
        "2022-02-10",
        "2022-08-10",
        "2023-02-08",
        "2023-08-08",
        "2024-02-06",
        "2024-08-05",
        "2025-02-03",
    ]
    meds = tuple(administration("denosumab", x, 183) for x in doses)
    record = base_record(
        medications=meds,
        bmd=tuple(
            dxa("2020-12-15", th="-2.8", ls="-3.0", fn="-2.9")
            + dxa("2024-05-10", th="-2.7", ls="-2.6", fn="-2.9")
        ),
    )
    assert outcome(record) == expected


# ----- Warnings -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("last", "warned"),
    [("2024-10-31", False), ("2024-10-30", True), ("2023-06-01", True), ("2023-05-31", False)],
)
@pytest.mark.protocol("W-DENOSUMAB_OVERDUE")
def test_denosumab_overdue_window(last: str, warned: bool) -> None:
    # as_of 2025-06-01: 213 days before is 2024-10-31 (not overdue); 24 months before is 2023-06-01.
    meds = (administration("denosumab", "2022-01-01", 183), administration("denosumab", last, 183))
    decision = evaluate(base_record(medications=meds), K, AS_OF)
    assert ("DENOSUMAB_OVERDUE" in [w.code for w in decision.warnings]) is warned


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE", "4-coverage")
def test_denosumab_overdue_silenced_by_new_coverage() -> None:
    meds = (administration("denosumab", "2024-06-01", 183), statement("alendronate", "2025-01-01"))
    decision = evaluate(base_record(medications=meds), K, AS_OF)
    assert "DENOSUMAB_OVERDUE" not in [w.code for w in decision.warnings]


@pytest.mark.protocol("R0")
def test_deceased_has_no_warnings() -> None:
    meds = (administration("denosumab", "2024-06-01", 183),)
    record = base_record(medications=meds, demographics=Demographics(d("1940-01-01"), "female", True))
    decision = evaluate(record, K, AS_OF)
    assert decision.outcome == "NOT_APPLICABLE" and decision.warnings == ()


# ----- §3a caps: missing data never leads to ESCALATE --------------------------------------------------
@pytest.mark.parametrize(
    ("labs", "missing"),
    [
        ((lab("calcium", "9.4", high="10.2"), lab("alkaline_phosphatase", "80", high="120")), "egfr"),
        ((lab("egfr", "75"), lab("alkaline_phosphatase", "80", high="120")), "calcium"),
        ((lab("egfr", "75"), lab("calcium", "9.4", high="10.2")), "alkaline_phosphatase"),
        (
            (lab("egfr", "75", day="2024-05-31"), lab("calcium", "9.4"), lab("alkaline_phosphatase", "80")),
            "egfr",
        ),
    ],
)
@pytest.mark.protocol("3a-cap")
def test_missing_labs_cap_at_consider(labs: tuple[object, ...], missing: str) -> None:
    decision = evaluate(base_record(labs=labs), K, AS_OF)  # type: ignore[arg-type]
    assert decision.outcome == "CONSIDER"
    assert missing in decision.missing


@pytest.mark.protocol("3b-labs", "3b-months")
def test_lab_exactly_12_months_old_counts() -> None:
    labs = (lab("egfr", "75", day="2024-06-01"), lab("calcium", "9.4"), lab("alkaline_phosphatase", "80"))
    assert outcome(base_record(labs=labs)) == "ESCALATE"


@pytest.mark.protocol("3a-cap")
def test_unreadable_resources_cap_at_consider() -> None:
    decision = evaluate(base_record(unreadable=(("Observation", 2),)), K, AS_OF)
    assert decision.outcome == "CONSIDER"
    assert "unreadable_resources" in decision.missing
    assert "2 Observation entries could not be read" in decision.caveats


@pytest.mark.protocol("3a-cap", "7-plan")
def test_no_target_t_score_caps_at_consider() -> None:
    bmd = dxa("2021-02-15", th_bmd="0.65", ls_bmd="0.78") + dxa("2024-05-20", th_bmd="0.66", ls_bmd="0.80")
    record = base_record(bmd=tuple(bmd), findings=(finding({"osteoporosis"}, "2020-01-01", "osteoporosis"),))
    decision = evaluate(record, K, AS_OF)
    assert decision.outcome == "CONSIDER" and "target_t_score" in decision.missing


# ----- Renal gate, R11, R13 ---------------------------------------------------------------------------
@pytest.mark.parametrize(("egfr", "expected"), [("29.9", "SPECIALIST_REVIEW"), ("30", "ESCALATE")])
@pytest.mark.protocol("RENAL")
def test_renal_gate_boundary(egfr: str, expected: str) -> None:
    labs = (lab("egfr", egfr), *STANDARD_LABS[1:])
    assert outcome(base_record(labs=labs)) == expected


@pytest.mark.parametrize(("lowest", "expected"), [("-2.49", "CONSIDER"), ("-2.5", "ESCALATE")])
@pytest.mark.protocol("R11", "7-plan")
def test_personalised_target_boundary(lowest: str, expected: str) -> None:
    bmd = dxa("2021-02-15", th="-2.6", ls="-2.9", fn="-2.6") + dxa(
        "2024-05-20", th="-2.49", ls="-2.7", fn=lowest
    )
    decision = evaluate(base_record(bmd=tuple(bmd)), K, AS_OF)
    assert decision.outcome == expected
    if expected == "CONSIDER":
        assert decision.rule == "R11" and not decision.suggestions_allowed


@pytest.mark.parametrize(("onset", "status"), [("2024-06-01", "excluded"), ("2024-05-31", "caution")])
@pytest.mark.protocol("6-agents")
def test_mi_within_12_months_excludes_romosozumab(onset: str, status: str) -> None:
    mi = finding({"myocardial_infarction"}, onset, "MI")
    decision = evaluate(base_record(findings=(mi,)), K, AS_OF)
    romo = next(a for a in decision.agents if a.agent == "romosozumab")
    assert romo.status == status


@pytest.mark.protocol("3b-cv-undated", "6-agents")
def test_mi_without_onset_is_caution_never_exclusion() -> None:
    mi = finding({"myocardial_infarction"}, None, "old MI", recorded=d("2025-05-01"))
    decision = evaluate(base_record(findings=(mi,)), K, AS_OF)
    romo = next(a for a in decision.agents if a.agent == "romosozumab")
    assert romo.status == "caution"
    assert any("confirm none in the past 12 months" in r for r in romo.reasons)


@pytest.mark.protocol("R13", "6-agents")
def test_all_anabolics_excluded_goes_to_specialist() -> None:
    mi = finding({"myocardial_infarction"}, "2025-01-01", "MI")
    paget = finding({"paget_disease_of_bone"}, "2010-01-01", "Paget")
    decision = evaluate(base_record(findings=(mi, paget)), K, AS_OF)
    assert decision.outcome == "SPECIALIST_REVIEW" and decision.rule == "R13"
    assert all(a.status == "excluded" for a in decision.agents)


@pytest.mark.protocol("3b-sex", "6-agents")
def test_unknown_sex_ranks_as_men_with_romosozumab_caution() -> None:
    record = base_record(demographics=Demographics(d("1957-04-01"), "unknown", False))
    decision = evaluate(record, K, AS_OF)
    ranked = [a.agent for a in decision.agents if a.rank]
    assert ranked[0] == "teriparatide"
    romo = next(a for a in decision.agents if a.agent == "romosozumab")
    assert romo.status == "caution" and "sex not recorded as female" in romo.reasons


@pytest.mark.protocol("R1")
def test_age_boundary() -> None:
    born_50_today = Demographics(d("1975-06-01"), "female", False)
    born_one_day_later = Demographics(d("1975-06-02"), "female", False)
    assert outcome(base_record(demographics=born_50_today)) != "NOT_APPLICABLE"
    assert outcome(base_record(demographics=born_one_day_later)) == "NOT_APPLICABLE"


@pytest.mark.protocol("R0b", "3a-blocking")
def test_missing_birth_date_blocks() -> None:
    decision = evaluate(base_record(demographics=Demographics(None, "female", False)), K, AS_OF)
    assert decision.outcome == "INSUFFICIENT_DATA" and decision.missing == ("birth_date",)


@pytest.mark.protocol("7-plan")
def test_follow_on_by_egfr() -> None:
    def statuses(egfr: str) -> dict[str, str]:
        labs = (lab("egfr", egfr), *STANDARD_LABS[1:])
        return {f.agent: f.status for f in evaluate(base_record(labs=labs), K, AS_OF).follow_on}

    assert statuses("35") == {
        "alendronate": "option",
        "risedronate": "excluded",
        "ibandronate": "excluded",
        "zoledronic_acid": "option",
        "denosumab": "option",
    }
    assert statuses("34.9") == {
        "alendronate": "excluded",
        "risedronate": "option",
        "ibandronate": "option",
        "zoledronic_acid": "excluded",
        "denosumab": "option",
    }


@pytest.mark.protocol("R3c", "3c-stopped", "4-anabolic-course")
def test_stopped_anabolic_statement_is_a_past_course() -> None:
    teriparatide = replace(
        statement("teriparatide", "2019-01-01", "2020-12-31", role="anabolic", interval_days=1),
        status="stopped",
    )
    decision = evaluate(
        base_record(medications=(statement("alendronate", "2021-03-01"), teriparatide)), K, AS_OF
    )
    assert decision.outcome == "SPECIALIST_REVIEW" and decision.rule == "R3c"


@pytest.mark.protocol("R2", "4-oncology")
def test_oncology_dose_routes_to_specialist() -> None:
    xgeva = replace(administration("denosumab", "2024-01-01", 28), strength="oncology")
    decision = evaluate(base_record(medications=(statement("alendronate", "2021-03-01"), xgeva)), K, AS_OF)
    assert decision.outcome == "SPECIALIST_REVIEW" and decision.rule == "R2"


@pytest.mark.protocol("R2", "4-oncology", "3b-cancer")
def test_unknown_strength_with_cancer_routes_to_specialist_else_caveat() -> None:
    zol = tuple(
        replace(administration("zoledronic_acid", x, 365), strength="unknown")
        for x in ("2021-03-01", "2022-03-01", "2023-03-01", "2024-03-01")
    )
    cancer = finding(set(), "2015-01-01", "breast cancer", is_cancer=True)
    assert evaluate(base_record(medications=zol, findings=(cancer,)), K, AS_OF).rule == "R2"
    decision = evaluate(base_record(medications=zol), K, AS_OF)
    assert "dose not recorded: oncology use not excluded" in decision.caveats
