"""Rules R7f, R7h, R7a and R8: follow-up DXA, drug holiday, adherence and the BMD response (§3, §5)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from cds_service.facts.dates import Interval, add_months
from cds_service.rules import bmd
from cds_service.rules.decision import ExposureSummary, SiteResponse
from cds_service.rules.evaluation import Evaluation
from cds_service.rules.exposure import BISPHOSPHONATES, adherence


def agent_covering(evaluation: Evaluation, day: date) -> tuple[str, Interval] | None:
    """The first-line agent covering `day`, else the one whose coverage ended last before it."""
    best: tuple[str, Interval] | None = None
    for exp in evaluation.exposures.values():
        if exp.role != "first_line":
            continue
        for interval in exp.intervals:
            if interval.contains(day):
                return exp.agent, interval
            if interval.end < day and (best is None or interval.end > best[1].end):
                best = (exp.agent, interval)
    return best


def rule_followup(evaluation: Evaluation, start: date, scans: list[bmd.Scan]) -> list[bmd.Scan]:
    window = bmd.followup_window_start(start, evaluation.knowledge)
    candidates = bmd.followup_candidates(scans, start, evaluation.as_of, evaluation.knowledge)
    for day in evaluation.record.dxa_reports_without_values:
        evaluation.caveat(f"DXA report {day.isoformat()} has no discrete values")
    if not candidates:
        evaluation.miss("followup_dxa")
        evaluation.done("INSUFFICIENT_DATA", "R7f", f"DXA with total hip on or after {window.isoformat()}")
    fresh = [s for s in candidates if not bmd.is_stale(s, evaluation.as_of, evaluation.knowledge)]
    if not fresh:
        evaluation.miss("followup_dxa")
        evaluation.done(
            "INSUFFICIENT_DATA",
            "R7f",
            evaluation.knowledge.line("followup_stale_reason", followup_date=candidates[-1].date.isoformat()),
        )
    return fresh


def rule_holiday_and_adherence(evaluation: Evaluation, start: date, followup_date: date) -> None:
    covering = agent_covering(evaluation, followup_date)
    if covering:
        evaluation.first_line_agent = covering[0]
    if covering and not covering[1].contains(followup_date):
        agent, interval = covering
        holiday = False
        if agent in BISPHOSPHONATES:
            holiday = interval.end < add_months(
                followup_date, -evaluation.knowledge.windows.holiday_bisphosphonate_months
            )
        elif agent == "denosumab":
            doses = [d for d in evaluation.exposures["denosumab"].dose_dates if d <= followup_date]
            last = doses[-1] if doses else interval.start
            holiday = (followup_date - last).days > evaluation.knowledge.windows.denosumab_max_interval_days
        if holiday:
            evaluation.done(
                "SPECIALIST_REVIEW",
                "R7h",
                evaluation.knowledge.line(
                    "holiday_reason",
                    agent=agent.replace("_", " "),
                    coverage_end=interval.end.isoformat(),
                    followup_date=followup_date.isoformat(),
                ),
            )
    span = Interval(start, max(start, followup_date))
    adh = adherence(evaluation.first_line, span, evaluation.exposures.get("denosumab"))
    agents = tuple(sorted(e.agent for e in evaluation.exposures.values() if e.role == "first_line"))
    quality = (
        "administrations/dispenses"
        if all(evaluation.exposures[a].verified for a in agents)
        else "statements/orders (adherence not verifiable)"
    )
    evaluation.evidence = replace(
        evaluation.evidence,
        exposure=ExposureSummary(agents, start, span.end, adh.ratio, adh.longest_gap_days, quality),
    )
    knowledge = evaluation.knowledge
    windows = knowledge.windows
    problems: list[str] = []
    if adh.ratio < knowledge.thresholds.coverage_ratio_min:
        problems.append(knowledge.line("coverage_ratio_reason", coverage_ratio=str(adh.ratio)))
    if adh.longest_gap_days > windows.adherence_gap_days:
        problems.append(knowledge.line("adherence_gap_reason", gap_days=str(adh.longest_gap_days)))
    if (
        adh.denosumab_max_interval_days
        and adh.denosumab_max_interval_days > windows.denosumab_max_interval_days
    ):
        problems.append(
            knowledge.line("denosumab_interval_reason", interval_days=str(adh.denosumab_max_interval_days))
        )
    if problems:
        evaluation.reasons.extend(problems)
        evaluation.done("NOT_ELIGIBLE_ADHERENCE", "R7a", knowledge.line("adherence_advice_reason"))


def rule_response(
    evaluation: Evaluation, start: date, scans: list[bmd.Scan], fresh: list[bmd.Scan]
) -> tuple[SiteResponse, SiteResponse | None, bmd.Scan]:
    th_base = bmd.baseline_scan(scans, "total_hip", start, evaluation.knowledge)
    any_base = any(
        bmd.baseline_scan(scans, site, start, evaluation.knowledge)
        for site in ("total_hip", "lumbar_spine", "femoral_neck")
    )
    th_fu, th_status = bmd.followup_scan(fresh, "total_hip", th_base)
    if not any_base:
        evaluation.miss("baseline_dxa")
    elif th_base is None:
        evaluation.miss("total_hip_baseline")
    if th_fu is None:
        evaluation.miss("total_hip_followup")
    if th_base is None or th_fu is None:
        window_start = add_months(start, -evaluation.knowledge.windows.baseline_before_start_months)
        window_end = add_months(start, evaluation.knowledge.windows.baseline_after_start_months)
        evaluation.done(
            "INSUFFICIENT_DATA",
            "R8",
            evaluation.knowledge.line(
                "baseline_missing_reason",
                window_start=window_start.isoformat(),
                window_end=window_end.isoformat(),
            ),
        )
    assert th_base is not None and th_fu is not None
    if th_status == "changed":
        _scanner_change(evaluation, th_base, th_fu)
    total_hip = bmd.assess_site("total_hip", th_base, th_fu, th_status, evaluation.knowledge)
    for caveat in total_hip.caveats:
        evaluation.caveat(caveat)
    if total_hip.response is None:
        evaluation.miss(
            "total_hip_followup"
            if th_base.results_at("total_hip", "t_score") or th_base.results_at("total_hip", "bmd")
            else "total_hip_baseline"
        )
        evaluation.done(
            "INSUFFICIENT_DATA", "R8", "no comparable total-hip values (T-score or g/cm²) at both times"
        )
    assert total_hip.response is not None
    evidence = bmd.dxa_evidence(
        th_base, "baseline", "baseline", ("total_hip", "lumbar_spine", "femoral_neck")
    )
    evidence += bmd.dxa_evidence(
        th_fu, "follow-up", _status_text(th_status), ("total_hip", "lumbar_spine", "femoral_neck")
    )
    ls_base = bmd.baseline_scan(scans, "lumbar_spine", start, evaluation.knowledge)
    ls_fu, ls_status = bmd.followup_scan(fresh, "lumbar_spine", ls_base)
    ls_response: SiteResponse | None = None
    if ls_base and ls_fu:
        if ls_status == "changed":
            _scanner_change(evaluation, ls_base, ls_fu)
        lumbar_spine = bmd.assess_site("lumbar_spine", ls_base, ls_fu, ls_status, evaluation.knowledge)
        ls_response = lumbar_spine.response
        for caveat in lumbar_spine.caveats:
            evaluation.caveat(caveat)
        if ls_base.date != th_base.date:
            evidence += bmd.dxa_evidence(ls_base, "baseline", "baseline", ("lumbar_spine",))
        if ls_fu.date != th_fu.date:
            evidence += bmd.dxa_evidence(ls_fu, "follow-up", _status_text(ls_status), ("lumbar_spine",))
    if ls_response is None:
        evaluation.caveat(evaluation.knowledge.line("spine_not_assessable_caveat"))
    evaluation.evidence = replace(
        evaluation.evidence,
        dxa=tuple(evidence),
        responses=(total_hip.response,) + ((ls_response,) if ls_response else ()),
    )
    return total_hip.response, ls_response, th_fu


def _scanner_change(evaluation: Evaluation, base: bmd.Scan, follow: bmd.Scan) -> None:
    label_a = base.scanner.label if base.scanner else "unknown"
    label_b = follow.scanner.label if follow.scanner else "unknown"
    evaluation.done(
        "SPECIALIST_REVIEW",
        "R8",
        evaluation.knowledge.line(
            "scanner_change_reason",
            baseline_date=base.date.isoformat(),
            baseline_scanner=label_a,
            followup_date=follow.date.isoformat(),
            followup_scanner=label_b,
        ),
    )


def _status_text(status: str) -> str:
    return {"same": "same scanner", "unknown": "assumed same scanner", "changed": "scanner changed"}[status]
