"""Phase plan, pre-treatment checks and monitoring lines (protocol §7). Pure text builders."""

from __future__ import annotations

from datetime import date

from cds_service.facts.dates import add_days, add_months
from cds_service.facts.patient_record import Sex
from cds_service.knowledge.indexed import Knowledge
from cds_service.rules.agents import duration_text

ORAL_BISPHOSPHONATES = ("alendronate", "risedronate", "ibandronate")


def phase_plan(
    agent: str | None,
    current_first_line: str | None,
    last_denosumab: date | None,
    pth_use_days: int,
    knowledge: Knowledge,
    *,
    as_of: date | None = None,
) -> tuple[str, ...]:
    """The phase plan lines (knowledge `texts.plan_*`); a due date on or before `as_of` is a fact."""
    if agent is None:
        return ()
    name = knowledge.model.agents[agent].display  # type: ignore[index]
    values = {**knowledge.text_values, "agent_display": name}
    lines: list[str] = []
    if current_first_line == "denosumab" and last_denosumab is not None:
        due, latest = _denosumab_switch(last_denosumab, knowledge)
        template = "plan_transition_denosumab"
        if as_of is not None and latest < as_of:
            template = "plan_transition_denosumab_late"
        elif as_of is not None and due <= as_of:
            template = "plan_transition_denosumab_due_passed"
        lines.append(
            knowledge.texts.line(
                template, {**values, "due_date": due.isoformat(), "latest_date": latest.isoformat()}
            )
        )
        if agent != "romosozumab":
            lines.append(knowledge.texts.line("plan_pth_after_denosumab", values))
    elif current_first_line in ORAL_BISPHOSPHONATES:
        lines.append(knowledge.texts.line("plan_transition_oral", values))
    if agent == "romosozumab":
        lines.append(knowledge.texts.line("plan_anabolic_romosozumab", values))
    else:
        allowance = (
            knowledge.windows.abaloparatide_allowance_days
            if agent == "abaloparatide"
            else knowledge.windows.pth_allowance_days
        )
        remaining = max(allowance - pth_use_days, 0)
        counts = {
            "allowance": duration_text(allowance),
            "used_days": str(pth_use_days),
            "remaining_days": str(remaining),
        }
        lines.append(knowledge.texts.line("plan_anabolic_pth", {**values, **counts}))
    lines.append(knowledge.texts.line("plan_follow_on", values))
    return tuple(lines)


def _denosumab_switch(last_denosumab: date, knowledge: Knowledge) -> tuple[date, date]:
    """(the next dose's due date, the latest switch date) after the last denosumab injection (§7)."""
    due = add_days(last_denosumab, denosumab_interval_days(knowledge))
    return due, add_months(last_denosumab, knowledge.windows.denosumab_transition_months)


def plan_start(
    agent: str | None,
    current_first_line: str | None,
    last_denosumab: date | None,
    knowledge: Knowledge,
    as_of: date,
) -> date | None:
    """The date the phase plan gives for starting the anabolic when it is after `as_of`: on denosumab,
    the next dose's due date (`plan_transition_denosumab`); None when the plan says to start now (or
    gives no date: an oral bisphosphonate stops the day the anabolic starts)."""
    if agent is None or current_first_line != "denosumab" or last_denosumab is None:
        return None
    due, _latest = _denosumab_switch(last_denosumab, knowledge)
    return due if due > as_of else None


def denosumab_interval_days(knowledge: Knowledge) -> int:
    """Days from one denosumab 60 mg injection to the next (the configured dosing interval)."""
    dosing = knowledge.model.dosing["denosumab"]
    days = dosing.by_strength_mg.get("60", dosing.default_days)
    assert days is not None, "the loader requires default_days for every agent but romosozumab"
    return days


def before_starting(sex: Sex, agent: str | None, knowledge: Knowledge) -> tuple[str, ...]:
    values = knowledge.text_values
    lines = [knowledge.texts.line("before_labs", values)]
    if agent in ("teriparatide", "abaloparatide"):
        lines.append(knowledge.texts.line("before_pth", values))
    tests = [
        "TSH",
        "protein electrophoresis / free light chains",
        "coeliac serology",
        "urine calcium",
        "glucocorticoid exposure",
    ]
    if sex != "female":
        tests.append("testosterone")
    lines.append(knowledge.texts.line("before_secondary_tests", {**values, "tests": ", ".join(tests)}))
    return tuple(lines)


def monitoring(knowledge: Knowledge) -> tuple[str, ...]:
    return (knowledge.texts.line("monitoring_line", knowledge.text_values),)
