"""Medication exposure: coverage per agent, first-line episodes, anabolic courses (protocol §4)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from cds_service.facts.dates import (
    Interval,
    add_days,
    add_months,
    covered_days,
    gaps,
    merge,
    next_day,
    previous_day,
)
from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.indexed import Knowledge

ANABOLIC_AGENTS = ("romosozumab", "teriparatide", "abaloparatide")
PTH_ANALOGUES = ("teriparatide", "abaloparatide")
BISPHOSPHONATES = ("alendronate", "risedronate", "ibandronate", "zoledronic_acid")
VERIFIED_SOURCES = ("administration", "dispense")
REQUEST_INTENTS = ("order", "original-order", "instance-order")
# Injectables: one dose per date (never per unit), and a statement's effectiveDateTime is a dose (§3c).
PER_DATE_AGENTS = ("denosumab", "zoledronic_acid", "romosozumab")
STOPPED_STATUSES = ("stopped", "on-hold")  # past exposure ending at the stop (§3c)


@dataclass(frozen=True)
class AgentExposure:
    agent: str
    role: str
    intervals: tuple[Interval, ...]  # merged coverage, verified priority applied
    dose_dates: tuple[date, ...]  # distinct administration/dispense dates
    verified: bool  # any administration or dispense
    requests_only: bool  # coverage rests only on MedicationRequests
    first_request_date: date | None
    strength_unknown: bool
    by_name: bool


@dataclass(frozen=True)
class AnabolicCourse:
    agent: str
    interval: Interval
    planned_end: date
    doses: int  # romosozumab doses (distinct dates, else whole months); PTH: covered days
    requests_only: bool
    first_request_date: date | None


@dataclass(frozen=True)
class Adherence:
    span: Interval
    ratio: Decimal  # rounded half-up to 0.01
    longest_gap_days: int
    denosumab_max_interval_days: int | None


def _one_interval(rec: MedicationRecord, start: date) -> Interval:
    if rec.interval_months:
        return Interval(start, previous_day(add_months(start, rec.interval_months)))
    return Interval(start, add_days(start, max(rec.interval_days or 1, 1) - 1))


def is_dose_record(rec: MedicationRecord) -> bool:
    """One dose on `event_date`: an administration or dispense, or a dated injectable statement."""
    if rec.event_date is None:
        return False
    if rec.source in VERIFIED_SOURCES:
        return True
    return (
        rec.source == "statement"
        and rec.agent in PER_DATE_AGENTS
        and rec.period_start is None
        and rec.period_end is None
    )


def record_coverage(rec: MedicationRecord, as_of: date, knowledge: Knowledge) -> Interval | None:
    """Coverage of one record per protocol §4; None when the record cannot be dated."""
    if rec.source == "administration":
        return _one_interval(rec, rec.event_date) if rec.event_date else None
    if rec.source == "dispense":
        if rec.event_date is None:
            return None
        if rec.agent in PER_DATE_AGENTS:  # one dose per date, never per unit (§3c)
            return _one_interval(rec, rec.event_date)
        if rec.days_supply:
            return Interval(rec.event_date, add_days(rec.event_date, rec.days_supply - 1))
        if rec.quantity is not None and rec.quantity > 0:
            dosing = knowledge.model.dosing.get(rec.agent)
            per_unit = (dosing.pen_days if rec.per_pen and dosing and dosing.pen_days else None) or (
                rec.interval_days or 1
            )
            days = int((rec.quantity * per_unit).to_integral_value(rounding=ROUND_HALF_UP))
            return Interval(rec.event_date, add_days(rec.event_date, max(days, 1) - 1))
        return _one_interval(rec, rec.event_date)
    if rec.source == "statement":
        if rec.period_start:
            if rec.period_end:
                return (
                    Interval(rec.period_start, rec.period_end) if rec.period_end >= rec.period_start else None
                )
            if rec.status == "active":
                return Interval(rec.period_start, max(as_of, rec.period_start))
            return _one_interval(rec, rec.period_start)
        return _one_interval(rec, rec.event_date) if rec.event_date else None
    # MedicationRequest
    if rec.intent not in REQUEST_INTENTS or rec.status not in ("active", "completed", "stopped"):
        return None
    start = rec.event_date or rec.period_start
    if start is None:
        return None
    if rec.status == "stopped":  # ends at the stop: the period's end, else one interval (§3c)
        first = rec.period_start or start
        if rec.period_end is not None:
            return Interval(first, rec.period_end) if rec.period_end >= first else None
        return _one_interval(rec, start)
    if rec.days_supply:
        return Interval(start, add_days(start, rec.days_supply * (1 + rec.repeats) - 1))
    if rec.period_start and rec.period_end and rec.period_end >= rec.period_start:
        return Interval(rec.period_start, rec.period_end)
    if rec.status == "active":
        return Interval(start, max(as_of, start))
    return _one_interval(rec, start)


def _is_first_line(rec: MedicationRecord) -> bool:
    return rec.role == "first_line" and rec.strength != "oncology"


def counted_coverages(
    medications: tuple[MedicationRecord, ...], as_of: date, knowledge: Knowledge
) -> list[Interval | None]:
    """`record_coverage` of each record that counts as exposure (first-line or anabolic, not an oncology
    dose), None for the others: computed once for `agent_exposures` and `first_line_record_coverage`."""
    return [record_coverage(rec, as_of, knowledge) if _is_counted(rec) else None for rec in medications]


def _is_counted(rec: MedicationRecord) -> bool:
    return rec.role in ("first_line", "anabolic") and rec.strength != "oncology"


def agent_exposures(
    medications: tuple[MedicationRecord, ...],
    as_of: date,
    knowledge: Knowledge,
    coverages: list[Interval | None] | None = None,
) -> dict[str, AgentExposure]:
    """Coverage per agent. Administrations and dispenses alone define coverage from their first
    record onward; statements and requests only add coverage before that (protocol §4).

    `coverages`: `counted_coverages(medications, ...)`, when already computed."""
    if coverages is None:
        coverages = counted_coverages(medications, as_of, knowledge)
    by_agent: dict[str, list[tuple[MedicationRecord, Interval | None]]] = defaultdict(list)
    for rec, coverage in zip(medications, coverages, strict=True):
        if _is_counted(rec):
            by_agent[rec.agent].append((rec, coverage))
    out: dict[str, AgentExposure] = {}
    for agent, covered in by_agent.items():
        recs = [rec for rec, _ in covered]
        verified = [r for r in recs if r.source in VERIFIED_SOURCES and r.event_date]
        first_verified = min((r.event_date for r in verified if r.event_date), default=None)
        doses = [r for r in recs if is_dose_record(r)]
        intervals: list[Interval] = []
        unverified_sources: set[str] = set()
        before_verified = previous_day(first_verified) if first_verified is not None else None
        for rec, coverage in covered:
            if coverage is None:
                continue
            interval = coverage
            dose_statement = rec.source == "statement" and is_dose_record(rec)
            if rec.source not in VERIFIED_SOURCES and before_verified is not None and not dose_statement:
                clipped = interval.clip(interval.start, before_verified)
                if clipped is None:
                    continue
                interval = clipped
            if rec.source not in VERIFIED_SOURCES:
                unverified_sources.add(rec.source)
            intervals.append(interval)
        requests = [r.event_date for r in recs if r.source == "request" and r.event_date]
        out[agent] = AgentExposure(
            agent=agent,
            role=recs[0].role,
            intervals=tuple(merge(intervals)),
            dose_dates=tuple(sorted({r.event_date for r in doses if r.event_date})),
            verified=bool(verified),
            requests_only=not verified and unverified_sources == {"request"},
            first_request_date=min(requests, default=None),
            strength_unknown=any(r.strength == "unknown" for r in recs),
            by_name=any(r.matched_by_name for r in recs),
        )
    return out


def first_line_record_coverage(
    medications: tuple[MedicationRecord, ...],
    as_of: date,
    knowledge: Knowledge,
    coverages: list[Interval | None] | None = None,
) -> list[tuple[str, Interval]]:
    """(agent, coverage) of each first-line record on its own, whatever its resource type: before the
    administration/dispense priority and before merging (for the §1 warnings' "coverage since").

    `coverages`: `counted_coverages(medications, ...)`, when already computed."""
    if coverages is None:
        coverages = counted_coverages(medications, as_of, knowledge)
    out: list[tuple[str, Interval]] = []
    for rec, interval in zip(medications, coverages, strict=True):
        if _is_first_line(rec) and interval is not None:
            out.append((rec.agent, interval))
    return out


def first_line_records(medications: tuple[MedicationRecord, ...]) -> list[MedicationRecord]:
    return [r for r in medications if _is_first_line(r)]


def union_intervals(
    exposures: dict[str, AgentExposure], agents: tuple[str, ...] | None = None
) -> list[Interval]:
    return merge(
        iv for exp in exposures.values() if (agents is None or exp.agent in agents) for iv in exp.intervals
    )


def first_line_union(exposures: dict[str, AgentExposure]) -> list[Interval]:
    return merge(iv for exp in exposures.values() if exp.role == "first_line" for iv in exp.intervals)


def _whole_months(interval: Interval, until: date) -> int:
    end = min(interval.end, until)
    months = 0
    while previous_day(add_months(interval.start, months + 1)) <= end:
        months += 1
    return months


def romosozumab_doses(exp: AgentExposure, as_of: date, within: Interval | None = None) -> int:
    """Distinct administration dates; without administrations, whole calendar months covered."""
    blocks = [within] if within else list(exp.intervals)
    dated = [d for d in exp.dose_dates if d <= as_of and any(b.contains(d) for b in blocks)]
    if exp.dose_dates:
        return len(dated)
    return sum(_whole_months(b, as_of) for b in blocks if b.start <= as_of)


def pth_use_days(exposures: dict[str, AgentExposure], until: date) -> int:
    merged = union_intervals(exposures, PTH_ANALOGUES)
    if not merged:
        return 0
    return covered_days(merged, merged[0].start, until)


def anabolic_courses(
    exposures: dict[str, AgentExposure], as_of: date, knowledge: Knowledge
) -> list[AnabolicCourse]:
    """Contiguous coverage blocks of each anabolic agent up to `as_of`, oldest first."""
    courses: list[AnabolicCourse] = []
    for agent in ANABOLIC_AGENTS:
        exp = exposures.get(agent)
        if exp is None:
            continue
        for interval in exp.intervals:
            if interval.start > as_of:
                continue
            if agent == "romosozumab":
                doses = romosozumab_doses(exp, as_of, within=interval)
                dose_dates = [d for d in exp.dose_dates if interval.contains(d)]
                planned = (
                    add_months(dose_dates[11], 1) if len(dose_dates) >= 12 else add_months(interval.start, 12)
                )
            else:
                allowance = (
                    knowledge.windows.abaloparatide_allowance_days
                    if agent == "abaloparatide"
                    else knowledge.windows.pth_allowance_days
                )
                prior = pth_use_days(exposures, previous_day(interval.start))
                planned = add_days(interval.start, max(allowance - prior, 0))
                doses = covered_days([interval], interval.start, min(interval.end, as_of))
            courses.append(
                AnabolicCourse(
                    agent=agent,
                    interval=interval,
                    planned_end=planned,
                    doses=doses,
                    requests_only=exp.requests_only,
                    first_request_date=exp.first_request_date,
                )
            )
    return sorted(courses, key=lambda c: c.interval.start)


def therapy_start(
    first_line: list[Interval], courses: list[AnabolicCourse], as_of: date, knowledge: Knowledge
) -> date | None:
    """First covered day of the latest first-line episode (protocol §3b).

    A new episode starts after an uncovered stretch longer than `episode_gap_months`, or after an
    anabolic course."""
    blocks = [iv for iv in first_line if iv.start <= as_of]
    if not blocks:
        return None
    start = blocks[0].start
    previous_end = blocks[0].end
    gap_months = knowledge.windows.episode_gap_months
    for interval in blocks[1:]:
        # Starts after the day following previous_end + gap_months (at date.max: never, as next_day).
        long_gap = (interval.start - add_months(previous_end, gap_months)).days > 1
        anabolic_between = bool(courses) and any(
            previous_end < c.interval.end < interval.start for c in courses
        )
        if long_gap or anabolic_between:
            start = interval.start
        previous_end = max(previous_end, interval.end)
    # First-line coverage that began before an anabolic course and continues after it: the
    # episode restarts after the course.
    for course in courses:
        if course.interval.end < as_of and start <= course.interval.end:
            after = [iv for iv in blocks if iv.end > course.interval.end]
            if after:
                start = max(after[0].start, next_day(course.interval.end))
    return start


def adherence(first_line: list[Interval], span: Interval, denosumab: AgentExposure | None) -> Adherence:
    covered = covered_days(first_line, span.start, span.end)
    ratio = (Decimal(covered) / Decimal(span.days)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    longest = max((g.days for g in gaps(first_line, span.start, span.end)), default=0)
    max_interval: int | None = None
    if denosumab is not None:
        doses = [d for d in denosumab.dose_dates if span.start <= d <= span.end]
        intervals = [(b - a).days for a, b in itertools.pairwise(doses)]
        max_interval = max(intervals, default=None)
    return Adherence(
        span=span, ratio=ratio, longest_gap_days=longest, denosumab_max_interval_days=max_interval
    )


def prior_denosumab_days(denosumab: AgentExposure | None, knowledge: Knowledge) -> int:
    """(last injection + tail days) - first injection; 0 without injections (protocol §3b)."""
    if denosumab is None or not denosumab.dose_dates:
        if denosumab is not None and denosumab.intervals:
            return (denosumab.intervals[-1].end - denosumab.intervals[0].start).days + 1
        return 0
    first, last = denosumab.dose_dates[0], denosumab.dose_dates[-1]
    return (add_days(last, knowledge.windows.denosumab_tail_days) - first).days
