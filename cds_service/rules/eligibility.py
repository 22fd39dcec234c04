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


def rule_demographics(ev: Evaluation) -> None:
    demo = ev.r.demographics
    if demo and demo.deceased:
        ev.done("NOT_APPLICABLE", "R0", "patient is deceased")
    ev.compute_warnings()
    if demo is None or demo.birth_date is None:
        ev.miss("birth_date")
        ev.done("INSUFFICIENT_DATA", "R0b", "no Patient or no birth date in the record")
    age = age_on(demo.birth_date, ev.as_of)
    if age < ev.k.t.min_age_years:
        ev.done(
            "NOT_APPLICABLE",
            "R1",
            f"age {age} < {ev.k.t.min_age_years}: younger adults need Z-score and secondary-cause assessment",
        )


def rule_malignancy(ev: Evaluation) -> None:
    f = ev.r.findings
    bone = history.with_concept(f, "bone_malignancy")
    if bone:
        ev.done(
            "SPECIALIST_REVIEW",
            "R2",
            "skeletal malignancy or bone metastasis: " + history.describe(bone[0]),
        )
    oncology = [m for m in ev.r.medications if m.role == "oncology_dose" or m.strength == "oncology"]
    if oncology:
        ev.done(
            "SPECIALIST_REVIEW",
            "R2",
            f"oncology-dose bone agent on record: {oncology[0].label or oncology[0].agent}",
        )
    unknown = [m for m in ev.r.medications if m.strength == "unknown" and m.role == "first_line"]
    if unknown and history.has_cancer(f):
        ev.done(
            "SPECIALIST_REVIEW",
            "R2",
            f"{unknown[0].agent.replace('_', ' ')} of unknown strength in a patient with a cancer diagnosis",
        )
    if unknown:
        ev.caveat("dose not recorded: oncology use not excluded")


def rule_anabolic(ev: Evaluation) -> None:
    current = [c for c in ev.courses if c.interval.contains(ev.as_of)]
    completed = [c for c in ev.courses if c.interval.end < ev.as_of]
    if current:
        _on_anabolic(ev, current[-1])
    if completed:
        last = completed[-1]
        ev.evidence = replace(
            ev.evidence, findings=(f"{last.agent} course {last.interval.start} to {last.interval.end}",)
        )
        agents = rank_agents(ev.agent_context(), ev.k)
        ev.done(
            "SPECIALIST_REVIEW",
            "R3c",
            "the sequential step was already taken; a second anabolic course is a specialist decision",
            agents=agents,
            follow_on=ev.follow_on_for(agents),
        )


def _on_anabolic(ev: Evaluation, course: AnabolicCourse) -> None:
    ctx = ev.agent_context()
    excluded, _ = findings_for(course.agent, ctx, ev.k, usage_limits=False)
    if course.requests_only and course.first_request_date:
        ev.caveat(
            f"ordered {course.first_request_date.isoformat()}; "
            "no dispensing or administration recorded — confirm started"
        )
    if excluded:
        ev.done(
            "SPECIALIST_REVIEW",
            "R3",
            f"contraindication recorded during {course.agent}: " + "; ".join(excluded),
        )
    at_limit = findings_for(course.agent, ctx, ev.k, usage_limits=True)[0] != excluded
    ev.reasons.append(
        f"{course.agent} course running since {course.interval.start.isoformat()}; "
        f"planned end {course.planned_end.isoformat()}"
    )
    if at_limit:
        ev.reasons.append("course limit reached: start the follow-on")
    soon = course.planned_end <= add_days(ev.as_of, ev.k.w.on_anabolic_card_days) or at_limit
    card = soon and not _follow_on_planned(ev, course)
    ev.evidence = replace(
        ev.evidence, plan=(f"Planned end of {course.agent}: {course.planned_end.isoformat()}",)
    )
    ev.done(
        "ON_ANABOLIC",
        "R3",
        on_anabolic_card=card,
        anabolic_agent=course.agent,
        planned_end=course.planned_end,
    )


def _follow_on_planned(ev: Evaluation, course: AnabolicCourse) -> bool:
    return any(
        m.role == "first_line"
        and m.source == "request"
        and m.intent in ("order", "original-order")
        and m.status in ("active", "on-hold")
        and m.event_date is not None
        and m.event_date >= course.interval.start
        for m in ev.r.medications
    )


def rule_very_high_risk(ev: Evaluation) -> None:
    demo = ev.r.demographics
    fx = history.assess_fractures(ev.r.findings, demo.birth_date if demo else None, ev.as_of, ev.k)
    ev.fractures = fx
    if fx.distinct_vertebral >= 2:
        ev.evidence = replace(ev.evidence, findings=tuple(history.describe(f) for f in fx.vertebral))
        ev.done("VERY_HIGH_RISK_PATHWAY", "R4", f"{fx.distinct_vertebral} distinct vertebral fractures")
    if fx.recent_fragility is not None:
        if fx.recent_is_possible_fragility:
            ev.caveat("confirm low-trauma mechanism (fracture not coded as osteoporotic)")
        ev.evidence = replace(ev.evidence, findings=(history.describe(fx.recent_fragility),))
        ev.done(
            "VERY_HIGH_RISK_PATHWAY",
            "R4",
            f"fragility fracture within {ev.k.w.recent_fracture_months} months: "
            + history.describe(fx.recent_fragility),
        )


def rule_high_risk(ev: Evaluation) -> None:
    t = ev.k.t
    diag = [
        v for v in ev.r.bmd if v.kind == "t_score" and v.site in DIAGNOSTIC_T_SITES and v.date <= ev.as_of
    ]
    low = [v for v in diag if v.value <= t.t_score_osteoporosis]
    mof = max(
        (f for f in ev.r.frax if f.kind == "mof" and f.date <= ev.as_of),
        key=lambda f: f.date,
        default=None,
    )
    hip = max(
        (f for f in ev.r.frax if f.kind == "hip" and f.date <= ev.as_of),
        key=lambda f: f.date,
        default=None,
    )
    if low:
        # ties: the earliest, then by site name, whatever the entry order
        lowest = min(low, key=lambda v: (v.value, v.date, v.site))
        if lowest.site == "unknown":
            ev.caveat("a T-score of undetermined site was used for the diagnosis only")
        ev.reasons.append(
            f"T-score {bmd.shown_t(lowest.value, t.t_score_osteoporosis, above=False)} "
            f"({lowest.site.replace('_', ' ')}, {lowest.date.isoformat()}) "
            f"<= {t.t_score_osteoporosis}"
        )
    elif mof and mof.value >= t.frax_mof_high_risk:
        ev.reasons.append(
            f"FRAX major osteoporotic fracture {mof.value} % ({mof.date.isoformat()}) "
            f">= {t.frax_mof_high_risk} %"
        )
    elif hip and hip.value >= t.frax_hip_high_risk and _recent_lowest_t_in_low_mass(ev):
        ev.reasons.append(
            f"FRAX hip {hip.value} % ({hip.date.isoformat()}) >= {t.frax_hip_high_risk} % with low bone mass"
        )
    elif not diag and not ev.r.frax:
        if history.with_concept(ev.r.findings, "osteoporosis"):
            ev.cap_reasons.append("high risk presumed from the coded diagnosis")
            ev.caveat("high risk presumed from the coded diagnosis")
        else:
            ev.miss("bmd_or_frax")
            ev.done("INSUFFICIENT_DATA", "R5", "no T-score at the diagnostic sites and no FRAX")
    elif "dxa" in ev.r.unavailable:
        # The DXA results could not be obtained: "no T-score <= -2.5" is unknown, not shown (§3a blocking).
        ev.miss("bmd_or_frax")
        ev.done("INSUFFICIENT_DATA", "R5", "no high-risk criterion met, but DXA results not available")
    else:
        ev.done("NOT_ELIGIBLE_NOT_HIGH_RISK", "R5", "no high-risk criterion met (T-score, FRAX)")
    if not ev.r.frax:
        ev.caveat("FRAX not on record")
    _aace(ev)


def _recent_lowest_t_in_low_mass(ev: Evaluation) -> bool:
    scans = [s for s in bmd.group_scans(ev.r.bmd, ev.as_of) if any(v.kind == "t_score" for v in s.values)]
    if not scans:
        return False
    latest_date = scans[-1].date
    values = [v.value for s in scans if s.date == latest_date for v in s.values if v.kind == "t_score"]
    lowest = min(values)
    return ev.k.t.t_score_osteoporosis < lowest <= ev.k.t.t_score_low_bone_mass


def _aace(ev: Evaluation) -> None:
    t = ev.k.t
    very_low = any(v.kind == "t_score" and v.value < t.aace_t_score for v in ev.r.bmd if v.date <= ev.as_of)
    frax_high = any(
        (f.kind == "mof" and f.value > t.aace_frax_mof) or (f.kind == "hip" and f.value > t.aace_frax_hip)
        for f in ev.r.frax
        if f.date <= ev.as_of
    )
    if very_low or frax_high:
        ev.evidence = replace(ev.evidence, aace_very_high_risk=True)


def rule_first_line(ev: Evaluation) -> date:
    records = [m for m in ev.r.medications if m.role == "first_line" and m.strength != "oncology"]
    if not records:
        if not ev.r.any_medication_resource:
            ev.miss("medication_history")
            ev.done("INSUFFICIENT_DATA", "R6", "no medication records at all")
        if any(kind.lower().startswith("medication") for kind, _ in ev.r.unreadable):
            # An unreadable medication entry may be the first-line drug: never "no first-line" (§3a).
            ev.miss("medication_history")
            ev.done("INSUFFICIENT_DATA", "R6", "no readable first-line record; medication entries unreadable")
        if MEDICATION_CATEGORIES.intersection(ev.r.unavailable):
            # A medication category the EHR could not provide may hold the first-line drug (§3a blocking).
            ev.miss("medication_history")
            ev.done("INSUFFICIENT_DATA", "R6", "no first-line record found; medication data not available")
        ev.done("NOT_ELIGIBLE_NO_FIRST_LINE", "R6", "no first-line anti-resorptive in the record")
    if any(m.matched_by_name for m in records):
        ev.caveat("medication identified by name")
    fl_exposures = [e for e in ev.exposures.values() if e.role == "first_line"]
    if fl_exposures and all(not e.verified for e in fl_exposures):
        only_orders = all(e.requests_only for e in fl_exposures)
        ev.caveat(
            "adherence not verifiable (orders only)"
            if only_orders
            else "adherence not verifiable (statements or orders only)"
        )
    start = therapy_start(ev.first_line, ev.courses, ev.as_of, ev.k)
    if start is None:
        ev.miss("medication_history")
        ev.done("INSUFFICIENT_DATA", "R6", "first-line therapy recorded without usable dates")
    return start


def rule_duration(ev: Evaluation, start: date) -> None:
    reevaluate = add_months(start, ev.k.w.therapy_min_months)
    if reevaluate > ev.as_of:
        ev.done(
            "NOT_ELIGIBLE_DURATION",
            "R7",
            f"first-line therapy since {start.isoformat()}: under {ev.k.w.therapy_min_months} months",
            reevaluate_from=reevaluate,
        )
