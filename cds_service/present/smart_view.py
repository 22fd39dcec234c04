"""What the SMART app shows for one patient, computed from the same facts and decision as the card.

Pure: no Flask, no HTTP, no clock (`as_of` comes from the decision). The chart and page modules draw
this view; nothing here re-decides anything clinical.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from cds_service.facts.dates import Interval, add_days, add_months, next_day, previous_day
from cds_service.facts.patient_record import BmdResult, PatientRecord
from cds_service.knowledge.indexed import Knowledge
from cds_service.present.card_text import agent_display, human_key
from cds_service.rules import bmd
from cds_service.rules.decision import ANABOLICS, Decision
from cds_service.rules.exposure import agent_exposures, first_line_union, pth_use_days

SITE_ORDER = ("total_hip", "femoral_neck", "lumbar_spine", "radius", "other", "unknown")
ROMOSOZUMAB_MONTHS = 12  # protocol §7: romosozumab 12 monthly doses (as the card's phase plan says)


@dataclass(frozen=True)
class Point:
    day: date
    site: str
    side: str | None
    value: Decimal
    scanner: str


@dataclass(frozen=True)
class TargetLine:
    """A protocol response target at one deciding site, drawn from the baseline to the follow-up DXA."""

    site: str
    kind: str  # t_score (delta-T target) | bmd (percent target)
    start: date
    end: date
    level: Decimal
    label: str
    met: bool


@dataclass(frozen=True)
class Bar:
    start: date
    end: date  # inclusive


@dataclass(frozen=True)
class TreatmentRow:
    label: str
    covered: tuple[Bar, ...]
    gaps: tuple[Bar, ...]
    doses: tuple[date, ...]
    planned: bool = False
    note: str = ""  # a planned row: where its start comes from (the chart's text description says it)


@dataclass(frozen=True)
class PatientView:
    t_scores: tuple[Point, ...]
    bmd_values: tuple[Point, ...]
    scanner_changes: tuple[date, ...]
    targets: tuple[TargetLine, ...]
    treat_to_target_t: Decimal | None
    treatment: tuple[TreatmentRow, ...]
    first_line_gaps: tuple[Bar, ...]
    as_of: date


def site_label(site: str) -> str:
    return human_key(site)


def _points(results: tuple[BmdResult, ...], kind: str) -> tuple[Point, ...]:
    chosen = [r for r in results if r.kind == kind]
    chosen.sort(key=lambda r: (SITE_ORDER.index(r.site), r.date, r.side or ""))
    return tuple(
        Point(r.date, r.site, r.side, r.value, r.scanner.label if r.scanner else "scanner not recorded")
        for r in chosen
    )


def _scanner_changes(record: PatientRecord, as_of: date) -> tuple[date, ...]:
    """Dates of a DXA whose scanner differs from the previous DXA's (both identified)."""
    scans = bmd.group_scans(record.bmd, as_of)
    changes: list[date] = []
    for before, after in itertools.pairwise(scans):
        if bmd.scanner_status(before.scanner, after.scanner) == "changed" and after.date not in changes:
            changes.append(after.date)
    return tuple(changes)


def _mean_at(record: PatientRecord, site: str, kind: str, day: date) -> Decimal | None:
    values = [r.value for r in record.bmd if r.site == site and r.kind == kind and r.date == day]
    return sum(values, Decimal(0)) / len(values) if values else None


def _targets(record: PatientRecord, decision: Decision) -> tuple[TargetLine, ...]:
    lines: list[TargetLine] = []
    for response in decision.evidence.responses:
        kind = "t_score" if response.metric == "delta_t" else "bmd"
        baseline = _mean_at(record, response.site, kind, response.baseline_date)
        if baseline is None:
            continue
        if kind == "t_score":
            level = baseline + response.target
            label = f"Target {site_label(response.site)}: +{response.target} T"
        else:
            level = (baseline * (1 + response.target / 100)).quantize(Decimal("0.001"))
            label = f"Target {site_label(response.site)}: +{response.target} %"
        lines.append(
            TargetLine(
                response.site,
                kind,
                response.baseline_date,
                response.followup_date,
                level,
                label,
                response.met,
            )
        )
    return tuple(lines)


def _gaps(intervals: list[Interval] | tuple[Interval, ...]) -> tuple[Bar, ...]:
    return tuple(
        Bar(next_day(before.end), previous_day(after.start))
        for before, after in itertools.pairwise(intervals)
        if after.start > next_day(before.end)
    )


def plan_start(decision: Decision) -> tuple[date, str]:
    """Where the planned phases start, and why: the start date the card's phase plan states (the next
    denosumab dose when it is still ahead), else the evaluation date (the card says "now" or gives no
    date: an oral bisphosphonate stops the day the anabolic starts)."""
    start = decision.evidence.plan_start
    if start is not None and start > decision.as_of:
        return start, f"from {start.isoformat()}, when the next denosumab dose is due (the card's plan)"
    return (
        decision.as_of,
        f"from the evaluation date {decision.as_of.isoformat()} (the card's plan: start now)",
    )


def _planned(decision: Decision, knowledge: Knowledge, used_pth_days: int) -> list[TreatmentRow]:
    """The anabolic phase from the decision's preferred agent, then the follow-on, from the start date
    the card's phase plan states (`plan_start`)."""
    if decision.outcome not in ("ESCALATE", "CONSIDER"):
        return []
    ranked = sorted(
        (a for a in decision.agents if a.status != "excluded" and a.agent in ANABOLICS),
        key=lambda a: (a.rank is None, a.rank or 0),
    )
    if not ranked:
        return []
    agent = ranked[0].agent
    start, note = plan_start(decision)
    if agent == "romosozumab":
        end = previous_day(add_months(start, ROMOSOZUMAB_MONTHS))
    else:
        allowance = (
            knowledge.windows.abaloparatide_allowance_days
            if agent == "abaloparatide"
            else knowledge.windows.pth_allowance_days
        )
        end = add_days(start, max(allowance - used_pth_days, 1) - 1)
    follow_on = next_day(end)
    return [
        TreatmentRow(f"Planned: {agent_display(agent, knowledge)}", (Bar(start, end),), (), (), True, note),
        TreatmentRow(
            "Planned: follow-on anti-resorptive (no gap)",
            (Bar(follow_on, previous_day(add_months(follow_on, 12))),),
            (),
            (),
            True,
            "from the day the anabolic ends",
        ),
    ]


def build_view(record: PatientRecord, decision: Decision, knowledge: Knowledge) -> PatientView:
    as_of = decision.as_of
    exposures = agent_exposures(record.medications, as_of, knowledge)
    rows: list[TreatmentRow] = []
    for agent in sorted(
        exposures, key=lambda a: min((iv.start for iv in exposures[a].intervals), default=as_of)
    ):
        exposure = exposures[agent]
        rows.append(
            TreatmentRow(
                agent_display(agent, knowledge),
                tuple(Bar(iv.start, iv.end) for iv in exposure.intervals),
                _gaps(exposure.intervals),
                exposure.dose_dates,
            )
        )
    rows.extend(_planned(decision, knowledge, pth_use_days(exposures, as_of)))
    return PatientView(
        t_scores=_points(record.bmd, "t_score"),
        bmd_values=_points(record.bmd, "bmd"),
        scanner_changes=_scanner_changes(record, as_of),
        targets=_targets(record, decision),
        treat_to_target_t=decision.evidence.target_t,
        treatment=tuple(rows),
        first_line_gaps=_gaps(first_line_union(exposures)),
        as_of=as_of,
    )


def points_by_site(points: tuple[Point, ...]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        grouped[point.site].append(point)
    return dict(grouped)
