"""Independent warnings (protocol §1): DENOSUMAB_OVERDUE and ANABOLIC_FOLLOW_ON_MISSING."""

from __future__ import annotations

from datetime import date, timedelta

from cds_service.facts.dates import Interval, add_months
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules.decision import WarningDetail
from cds_service.rules.exposure import AgentExposure, AnabolicCourse


def _covered_since(first_line: list[tuple[str, Interval]], since: date, as_of: date) -> bool:
    """Coverage by another first-line agent starting after `since` that covers `as_of`.

    Read per record (any resource type), never from the merged union: a bisphosphonate that follows
    the last denosumab injection merges with that injection's coverage and would seem to start before
    it. A later denosumab order is not coverage (the overdue injection itself is what is missing)."""
    return any(agent != "denosumab" and iv.start > since and iv.contains(as_of) for agent, iv in first_line)


def denosumab_overdue(
    denosumab: AgentExposure | None,
    first_line: list[tuple[str, Interval]],
    as_of: date,
    knowledge: Knowledge,
) -> tuple[WarningDetail | None, str | None]:
    """(warning, caveat). Beyond `denosumab_overdue_max_months` only a caveat line, no warning code."""
    max_interval_days = knowledge.windows.denosumab_max_interval_days
    if denosumab is None:
        return None, None
    injections = [d for d in denosumab.dose_dates if d <= as_of]
    if not injections:
        return None, None
    last = injections[-1]
    days = (as_of - last).days
    if days <= max_interval_days or _covered_since(first_line, last, as_of):
        return None, None
    if last < add_months(as_of, -knowledge.windows.denosumab_overdue_max_months):
        return None, knowledge.line("denosumab_overdue_old_caveat", last_dose=last.isoformat())
    text = knowledge.line(
        "denosumab_overdue_warning", last_dose=last.isoformat(), days_since=str(days), as_of=as_of.isoformat()
    )
    due = last + timedelta(days=max_interval_days)
    return WarningDetail("DENOSUMAB_OVERDUE", text, last=last, due=due), None


def follow_on_missing(
    courses: list[AnabolicCourse], first_line: list[tuple[str, Interval]], as_of: date, knowledge: Knowledge
) -> WarningDetail | None:
    """An anabolic course ended within `follow_on_missing_months` and no first-line record (any type) covers
    past its end."""
    window_start = add_months(as_of, -knowledge.windows.follow_on_missing_months)
    for course in reversed(courses):
        end = course.interval.end
        if not (window_start <= end < as_of):
            continue
        if any(iv.end > end for _, iv in first_line):
            continue
        return WarningDetail(
            "ANABOLIC_FOLLOW_ON_MISSING",
            knowledge.line(
                "follow_on_missing_warning",
                course_agent=course.agent.capitalize(),
                course_end=end.isoformat(),
            ),
            last=end,
            due=end,
            agent=course.agent,
        )
    return None
