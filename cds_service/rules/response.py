"""Rules R7f, R7h, R7a and R8: follow-up DXA, drug holiday, adherence and the BMD response (§3, §5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from cds_service.facts.dates import Interval, add_months
from cds_service.rules import bmd
from cds_service.rules.decision import ExposureSummary, SiteResponse
from cds_service.rules.evaluation import Evaluation
from cds_service.rules.exposure import BISPHOSPHONATES, adherence


def agent_covering(ev: Evaluation, day: date) -> tuple[str, Interval] | None:
    """The first-line agent covering `day`, else the one whose coverage ended last before it."""
    best: tuple[str, Interval] | None = None
    for exp in ev.exposures.values():
        if exp.role != "first_line":
            continue
        for iv in exp.intervals:
            if iv.contains(day):
                return exp.agent, iv
            if iv.end < day and (best is None or iv.end > best[1].end):
                best = (exp.agent, iv)
    return best


def rule_followup(ev: Evaluation, start: date, scans: list[bmd.Scan]) -> list[bmd.Scan]:
    window = bmd.followup_window_start(start, ev.k)
    candidates = bmd.followup_candidates(scans, start, ev.as_of, ev.k)
    for day in ev.r.dxa_reports_without_values:
        ev.caveat(f"DXA report {day.isoformat()} has no discrete values")
    if not candidates:
        ev.miss("followup_dxa")
        ev.done("INSUFFICIENT_DATA", "R7f", f"DXA with total hip on or after {window.isoformat()}")
    fresh = [s for s in candidates if not bmd.is_stale(s, ev.as_of, ev.k)]
    if not fresh:
        ev.miss("followup_dxa")
        ev.done(
            "INSUFFICIENT_DATA",
            "R7f",
            f"latest follow-up DXA {candidates[-1].date.isoformat()} is older than "
            f"{ev.k.w.followup_max_age_months} months: repeat DXA with total hip",
        )
    return fresh


def rule_holiday_and_adherence(ev: Evaluation, start: date, followup_date: date) -> None:
    covering = agent_covering(ev, followup_date)
    if covering:
        ev.first_line_agent = covering[0]
    if covering and not covering[1].contains(followup_date):
        agent, iv = covering
        holiday = False
        if agent in BISPHOSPHONATES:
            holiday = iv.end < add_months(followup_date, -ev.k.w.holiday_bisphosphonate_months)
        elif agent == "denosumab":
            doses = [d for d in ev.exposures["denosumab"].dose_dates if d <= followup_date]
            last = doses[-1] if doses else iv.start
            holiday = (followup_date - last).days > ev.k.w.denosumab_max_interval_days
        if holiday:
            ev.done(
                "SPECIALIST_REVIEW",
                "R7h",
                f"drug holiday: {agent.replace('_', ' ')} coverage ended {iv.end.isoformat()}, before the "
                f"follow-up DXA {followup_date.isoformat()}: "
                "change reflects time off therapy, not non-response",
            )
    span = Interval(start, max(start, followup_date))
    adh = adherence(ev.first_line, span, ev.exposures.get("denosumab"))
    agents = tuple(sorted(e.agent for e in ev.exposures.values() if e.role == "first_line"))
    quality = (
        "administrations/dispenses"
        if all(ev.exposures[a].verified for a in agents)
        else "statements/orders (adherence not verifiable)"
    )
    ev.evidence = replace(
        ev.evidence,
        exposure=ExposureSummary(agents, start, span.end, adh.ratio, adh.longest_gap_days, quality),
    )
    w = ev.k.w
    problems: list[str] = []
    if adh.ratio < ev.k.t.coverage_ratio_min:
        problems.append(f"coverage ratio {adh.ratio} < {ev.k.t.coverage_ratio_min}")
    if adh.longest_gap_days > w.adherence_gap_days:
        problems.append(f"uncovered gap of {adh.longest_gap_days} days > {w.adherence_gap_days}")
    if adh.denosumab_max_interval_days and adh.denosumab_max_interval_days > w.denosumab_max_interval_days:
        problems.append(
            f"denosumab inter-dose interval {adh.denosumab_max_interval_days} days "
            f"> {w.denosumab_max_interval_days}"
        )
    if problems:
        ev.reasons.extend(problems)
        ev.done(
            "NOT_ELIGIBLE_ADHERENCE",
            "R7a",
            "apparent non-response may reflect exposure; review adherence and absorption; an IV or "
            "injectable agent may be considered",
        )


def rule_response(
    ev: Evaluation, start: date, scans: list[bmd.Scan], fresh: list[bmd.Scan]
) -> tuple[SiteResponse, SiteResponse | None, bmd.Scan]:
    th_base = bmd.baseline_scan(scans, "total_hip", start, ev.k)
    any_base = any(
        bmd.baseline_scan(scans, site, start, ev.k) for site in ("total_hip", "lumbar_spine", "femoral_neck")
    )
    th_fu, th_status = bmd.followup_scan(fresh, "total_hip", th_base)
    if not any_base:
        ev.miss("baseline_dxa")
    elif th_base is None:
        ev.miss("total_hip_baseline")
    if th_fu is None:
        ev.miss("total_hip_followup")
    if th_base is None or th_fu is None:
        lo = add_months(start, -ev.k.w.baseline_before_start_months)
        hi = add_months(start, ev.k.w.baseline_after_start_months)
        ev.done(
            "INSUFFICIENT_DATA",
            "R8",
            f"response cannot be assessed: baseline DXA with total hip between {lo.isoformat()} and "
            f"{hi.isoformat()} and a follow-up DXA with total hip are both needed",
        )
    assert th_base is not None and th_fu is not None
    if th_status == "changed":
        _scanner_change(ev, th_base, th_fu)
    th = bmd.assess_site("total_hip", th_base, th_fu, th_status, ev.k)
    for c in th.caveats:
        ev.caveat(c)
    if th.response is None:
        ev.miss(
            "total_hip_followup"
            if th_base.at("total_hip", "t_score") or th_base.at("total_hip", "bmd")
            else "total_hip_baseline"
        )
        ev.done("INSUFFICIENT_DATA", "R8", "no comparable total-hip values (T-score or g/cm²) at both times")
    assert th.response is not None
    evidence = bmd.dxa_evidence(
        th_base, "baseline", "baseline", ("total_hip", "lumbar_spine", "femoral_neck")
    )
    evidence += bmd.dxa_evidence(
        th_fu, "follow-up", _status_text(th_status), ("total_hip", "lumbar_spine", "femoral_neck")
    )
    ls_base = bmd.baseline_scan(scans, "lumbar_spine", start, ev.k)
    ls_fu, ls_status = bmd.followup_scan(fresh, "lumbar_spine", ls_base)
    ls_response: SiteResponse | None = None
    if ls_base and ls_fu:
        if ls_status == "changed":
            _scanner_change(ev, ls_base, ls_fu)
        ls = bmd.assess_site("lumbar_spine", ls_base, ls_fu, ls_status, ev.k)
        ls_response = ls.response
        for c in ls.caveats:
            ev.caveat(c)
        if ls_base.date != th_base.date:
            evidence += bmd.dxa_evidence(ls_base, "baseline", "baseline", ("lumbar_spine",))
        if ls_fu.date != th_fu.date:
            evidence += bmd.dxa_evidence(ls_fu, "follow-up", _status_text(ls_status), ("lumbar_spine",))
    if ls_response is None:
        ev.caveat("spine not assessable: decided on the total hip alone")
    ev.evidence = replace(
        ev.evidence,
        dxa=tuple(evidence),
        responses=(th.response,) + ((ls_response,) if ls_response else ()),
    )
    return th.response, ls_response, th_fu


def _scanner_change(ev: Evaluation, base: bmd.Scan, follow: bmd.Scan) -> None:
    label_a = base.scanner.label if base.scanner else "unknown"
    label_b = follow.scanner.label if follow.scanner else "unknown"
    ev.done(
        "SPECIALIST_REVIEW",
        "R8",
        f"scanner changed between DXAs ({base.date.isoformat()}: {label_a}; "
        f"{follow.date.isoformat()}: {label_b}): change not interpretable",
    )


def _status_text(status: str) -> str:
    return {"same": "same scanner", "unknown": "assumed same scanner", "changed": "scanner changed"}[status]
