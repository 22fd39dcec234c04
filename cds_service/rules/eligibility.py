"""Rules R0-R7 of the decision table: population, malignancy, anabolic status, very high risk,
high risk, first-line exposure and duration (protocol §3)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from cds_service.facts.dates import add_days, add_months, age_on
from cds_service.facts.patient_record import MEDICATION_CATEGORIES
from cds_service.rules import bmd, history
from cds_service.rules.agents import findings_for, rank_agents
from cds_service.rules.evaluation import Evaluation
from cds_service.rules.exposure import AnabolicCourse, therapy_start

DIAGNOSTIC_T_SITES = ("total_hip", "femoral_neck", "lumbar_spine", "radius", "unknown")


def rule_demographics(evaluation: Evaluation) -> None:
    demo = evaluation.record.demographics
    if demo and demo.deceased:
        evaluation.done("NOT_APPLICABLE", "R0", "patient is deceased")
    evaluation.compute_warnings()
    if demo is None or demo.birth_date is None:
        evaluation.miss("birth_date")
        evaluation.done("INSUFFICIENT_DATA", "R0b", "no Patient or no birth date in the record")
    age = age_on(demo.birth_date, evaluation.as_of)
    if age < evaluation.knowledge.thresholds.min_age_years:
        evaluation.done("NOT_APPLICABLE", "R1", evaluation.knowledge.line("age_reason", age=str(age)))


def rule_malignancy(evaluation: Evaluation) -> None:
    findings = evaluation.record.findings
    bone = history.with_concept(findings, "bone_malignancy")
    if bone:
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R2",
            evaluation.knowledge.line("bone_malignancy_reason", finding=history.describe(bone[0])),
        )
    oncology = [
        m for m in evaluation.record.medications if m.role == "oncology_dose" or m.strength == "oncology"
    ]
    if oncology:
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R2",
            evaluation.knowledge.line(
                "oncology_dose_reason", medication=oncology[0].label or oncology[0].agent
            ),
        )
    unknown = [m for m in evaluation.record.medications if m.strength == "unknown" and m.role == "first_line"]
    if unknown and history.has_cancer(findings):
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R2",
            evaluation.knowledge.line("unknown_strength_reason", agent=unknown[0].agent.replace("_", " ")),
        )
    if unknown:
        evaluation.caveat(evaluation.knowledge.line("dose_not_recorded_caveat"))


def rule_anabolic(evaluation: Evaluation) -> None:
    current = [c for c in evaluation.courses if c.interval.contains(evaluation.as_of)]
    completed = [c for c in evaluation.courses if c.interval.end < evaluation.as_of]
    if current:
        _on_anabolic(evaluation, current[-1])
    if completed:
        last = completed[-1]
        evaluation.evidence = replace(
            evaluation.evidence,
            findings=(f"{last.agent} course {last.interval.start} to {last.interval.end}",),
        )
        agents = rank_agents(evaluation.agent_context(), evaluation.knowledge)
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R3c",
            evaluation.knowledge.line("second_course_reason"),
            agents=agents,
            follow_on=evaluation.follow_on_for(agents),
        )


def _on_anabolic(evaluation: Evaluation, course: AnabolicCourse) -> None:
    ctx = evaluation.agent_context()
    excluded, _ = findings_for(course.agent, ctx, evaluation.knowledge, usage_limits=False)
    if course.requests_only and course.first_request_date:
        evaluation.caveat(
            evaluation.knowledge.line(
                "anabolic_ordered_caveat", order_date=course.first_request_date.isoformat()
            )
        )
    if excluded:
        evaluation.done(
            "SPECIALIST_REVIEW",
            "R3",
            evaluation.knowledge.line(
                "anabolic_contraindication_reason", agent=course.agent, exclusions="; ".join(excluded)
            ),
        )
    at_limit = findings_for(course.agent, ctx, evaluation.knowledge, usage_limits=True)[0] != excluded
    evaluation.reasons.append(
        evaluation.knowledge.line(
            "anabolic_running_reason",
            agent=course.agent,
            course_start=course.interval.start.isoformat(),
            planned_end=course.planned_end.isoformat(),
        )
    )
    if at_limit:
        evaluation.reasons.append(evaluation.knowledge.line("course_limit_reason"))
    soon = (
        course.planned_end <= add_days(evaluation.as_of, evaluation.knowledge.windows.on_anabolic_card_days)
        or at_limit
    )
    card = soon and not _follow_on_planned(evaluation, course)
    evaluation.evidence = replace(
        evaluation.evidence, plan=(f"Planned end of {course.agent}: {course.planned_end.isoformat()}",)
    )
    evaluation.done(
        "ON_ANABOLIC",
        "R3",
        on_anabolic_card=card,
        anabolic_agent=course.agent,
        planned_end=course.planned_end,
    )


def _follow_on_planned(evaluation: Evaluation, course: AnabolicCourse) -> bool:
    return any(
        m.role == "first_line"
        and m.source == "request"
        and m.intent in ("order", "original-order")
        and m.status in ("active", "on-hold")
        and m.event_date is not None
        and m.event_date >= course.interval.start
        for m in evaluation.record.medications
    )


def rule_very_high_risk(evaluation: Evaluation) -> None:
    demo = evaluation.record.demographics
    fractures = history.assess_fractures(
        evaluation.record.findings, demo.birth_date if demo else None, evaluation.as_of, evaluation.knowledge
    )
    evaluation.fractures = fractures
    if fractures.distinct_vertebral >= 2:
        evaluation.evidence = replace(
            evaluation.evidence, findings=tuple(history.describe(f) for f in fractures.vertebral)
        )
        evaluation.done(
            "VERY_HIGH_RISK_PATHWAY",
            "R4",
            evaluation.knowledge.line("vertebral_fractures_reason", count=str(fractures.distinct_vertebral)),
        )
    if fractures.recent_fragility is not None:
        if fractures.recent_is_possible_fragility:
            evaluation.caveat(evaluation.knowledge.line("low_trauma_caveat"))
        evaluation.evidence = replace(
            evaluation.evidence, findings=(history.describe(fractures.recent_fragility),)
        )
        evaluation.done(
            "VERY_HIGH_RISK_PATHWAY",
            "R4",
            evaluation.knowledge.line(
                "recent_fracture_reason", finding=history.describe(fractures.recent_fragility)
            ),
        )


def rule_high_risk(evaluation: Evaluation) -> None:
    thresholds = evaluation.knowledge.thresholds
    diag = [
        v
        for v in evaluation.record.bmd
        if v.kind == "t_score" and v.site in DIAGNOSTIC_T_SITES and v.date <= evaluation.as_of
    ]
    low = [v for v in diag if v.value <= thresholds.t_score_osteoporosis]
    mof = max(
        (f for f in evaluation.record.frax if f.kind == "mof" and f.date <= evaluation.as_of),
        key=lambda f: f.date,
        default=None,
    )
    hip = max(
        (f for f in evaluation.record.frax if f.kind == "hip" and f.date <= evaluation.as_of),
        key=lambda f: f.date,
        default=None,
    )
    if low:
        # ties: the earliest, then by site name, whatever the entry order
        lowest = min(low, key=lambda v: (v.value, v.date, v.site))
        if lowest.site == "unknown":
            evaluation.caveat("a T-score of undetermined site was used for the diagnosis only")
        evaluation.reasons.append(
            evaluation.knowledge.line(
                "t_score_reason",
                t_score=bmd.shown_t(lowest.value, thresholds.t_score_osteoporosis, above=False),
                site=lowest.site.replace("_", " "),
                scan_date=lowest.date.isoformat(),
            )
        )
    elif mof and mof.value >= thresholds.frax_mof_high_risk:
        evaluation.reasons.append(
            evaluation.knowledge.line(
                "frax_mof_reason",
                frax=str(mof.value),
                frax_date=mof.date.isoformat(),
                frax_mof_high_risk=str(thresholds.frax_mof_high_risk),  # as configured ("20.0")
            )
        )
    elif hip and hip.value >= thresholds.frax_hip_high_risk and _recent_lowest_t_in_low_mass(evaluation):
        evaluation.reasons.append(
            evaluation.knowledge.line(
                "frax_hip_reason",
                frax=str(hip.value),
                frax_date=hip.date.isoformat(),
                frax_hip_high_risk=str(thresholds.frax_hip_high_risk),  # as configured ("3.0")
            )
        )
    elif not diag and not evaluation.record.frax:
        if history.with_concept(evaluation.record.findings, "osteoporosis"):
            evaluation.cap_reasons.append("high risk presumed from the coded diagnosis")
            evaluation.caveat("high risk presumed from the coded diagnosis")
        else:
            evaluation.miss("bmd_or_frax")
            evaluation.done("INSUFFICIENT_DATA", "R5", "no T-score at the diagnostic sites and no FRAX")
    elif "dxa" in evaluation.record.unavailable:
        # The DXA results could not be obtained: "no T-score <= -2.5" is unknown, not shown (§3a blocking).
        evaluation.miss("bmd_or_frax")
        evaluation.done(
            "INSUFFICIENT_DATA", "R5", "no high-risk criterion met, but DXA results not available"
        )
    else:
        evaluation.done("NOT_ELIGIBLE_NOT_HIGH_RISK", "R5", "no high-risk criterion met (T-score, FRAX)")
    if not evaluation.record.frax:
        evaluation.caveat(evaluation.knowledge.line("frax_missing_caveat"))
    _aace(evaluation)


def _recent_lowest_t_in_low_mass(evaluation: Evaluation) -> bool:
    scans = [
        s
        for s in bmd.group_scans(evaluation.record.bmd, evaluation.as_of)
        if any(v.kind == "t_score" for v in s.values)
    ]
    if not scans:
        return False
    latest_date = scans[-1].date
    values = [v.value for s in scans if s.date == latest_date for v in s.values if v.kind == "t_score"]
    lowest = min(values)
    return (
        evaluation.knowledge.thresholds.t_score_osteoporosis
        < lowest
        <= evaluation.knowledge.thresholds.t_score_low_bone_mass
    )


def _aace(evaluation: Evaluation) -> None:
    thresholds = evaluation.knowledge.thresholds
    very_low = any(
        v.kind == "t_score" and v.value < thresholds.aace_t_score
        for v in evaluation.record.bmd
        if v.date <= evaluation.as_of
    )
    frax_high = any(
        (f.kind == "mof" and f.value > thresholds.aace_frax_mof)
        or (f.kind == "hip" and f.value > thresholds.aace_frax_hip)
        for f in evaluation.record.frax
        if f.date <= evaluation.as_of
    )
    if very_low or frax_high:
        evaluation.evidence = replace(evaluation.evidence, aace_very_high_risk=True)


def rule_first_line(evaluation: Evaluation) -> date:
    records = [
        m for m in evaluation.record.medications if m.role == "first_line" and m.strength != "oncology"
    ]
    if not records:
        if not evaluation.record.any_medication_resource:
            evaluation.miss("medication_history")
            evaluation.done("INSUFFICIENT_DATA", "R6", "no medication records at all")
        if any(kind.lower().startswith("medication") for kind, _ in evaluation.record.unreadable):
            # An unreadable medication entry may be the first-line drug: never "no first-line" (§3a).
            evaluation.miss("medication_history")
            evaluation.done(
                "INSUFFICIENT_DATA", "R6", "no readable first-line record; medication entries unreadable"
            )
        if MEDICATION_CATEGORIES.intersection(evaluation.record.unavailable):
            # A medication category the EHR could not provide may hold the first-line drug (§3a blocking).
            evaluation.miss("medication_history")
            evaluation.done(
                "INSUFFICIENT_DATA", "R6", "no first-line record found; medication data not available"
            )
        evaluation.done("NOT_ELIGIBLE_NO_FIRST_LINE", "R6", "no first-line anti-resorptive in the record")
    if any(m.matched_by_name for m in records):
        evaluation.caveat("medication identified by name")
    fl_exposures = [e for e in evaluation.exposures.values() if e.role == "first_line"]
    if fl_exposures and all(not e.verified for e in fl_exposures):
        only_orders = all(e.requests_only for e in fl_exposures)
        evaluation.caveat(
            "adherence not verifiable (orders only)"
            if only_orders
            else "adherence not verifiable (statements or orders only)"
        )
    start = therapy_start(evaluation.first_line, evaluation.courses, evaluation.as_of, evaluation.knowledge)
    if start is None:
        evaluation.miss("medication_history")
        evaluation.done("INSUFFICIENT_DATA", "R6", "first-line therapy recorded without usable dates")
    return start


def rule_duration(evaluation: Evaluation, start: date) -> None:
    reevaluate = add_months(start, evaluation.knowledge.windows.therapy_min_months)
    if reevaluate > evaluation.as_of:
        evaluation.done(
            "NOT_ELIGIBLE_DURATION",
            "R7",
            evaluation.knowledge.line("duration_reason", therapy_start=start.isoformat()),
            reevaluate_from=reevaluate,
        )
