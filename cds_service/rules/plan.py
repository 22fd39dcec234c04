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
) -> tuple[str, ...]:
    if agent is None:
        return ()
    name = knowledge.model.agents[agent].display  # type: ignore[index]
    lines: list[str] = []
    if current_first_line == "denosumab" and last_denosumab is not None:
        due = add_days(last_denosumab, denosumab_interval_days(knowledge))
        latest = add_months(last_denosumab, knowledge.w.denosumab_transition_months)
        lines.append(
            f"Transition: on denosumab, start {name} when the next dose is due ({due.isoformat()}; "
            f"no later than {latest.isoformat()})."
        )
        if agent != "romosozumab":
            lines.append("A PTH analogue after denosumab needs a specialist-planned overlap.")
    elif current_first_line in ORAL_BISPHOSPHONATES:
        lines.append(f"Transition: stop the oral bisphosphonate the day {name} starts.")
    if agent == "romosozumab":
        lines.append("Anabolic phase: romosozumab 12 monthly doses.")
    else:
        allowance = (
            knowledge.w.abaloparatide_allowance_days
            if agent == "abaloparatide"
            else knowledge.w.pth_allowance_days
        )
        remaining = max(allowance - pth_use_days, 0)
        lines.append(
            f"Anabolic phase: {name} up to {duration_text(allowance)}, minus prior PTH-analogue use "
            f"({pth_use_days} days used; {remaining} days remain)."
        )
    lines.append("Follow-on: an anti-resorptive starts as soon as the anabolic ends, with no gap.")
    return tuple(lines)


def denosumab_interval_days(knowledge: Knowledge) -> int:
    """Days from one denosumab 60 mg injection to the next (the configured dosing interval)."""
    dosing = knowledge.model.dosing["denosumab"]
    days = dosing.by_strength_mg.get("60", dosing.default_days)
    assert days is not None, "the loader requires default_days for every agent but romosozumab"
    return days


def before_starting(sex: Sex, agent: str | None) -> tuple[str, ...]:
    lines = ["Albumin-corrected calcium, 25-OH vitamin D, alkaline phosphatase and eGFR."]
    if agent in ("teriparatide", "abaloparatide"):
        lines.append("PTH before starting a PTH analogue.")
    tests = [
        "TSH",
        "protein electrophoresis / free light chains",
        "coeliac serology",
        "urine calcium",
        "glucocorticoid exposure",
    ]
    if sex != "female":
        tests.append("testosterone")
    lines.append("Secondary-cause tests (not checked in the record, no code list): " + ", ".join(tests) + ".")
    return tuple(lines)


MONITORING = (
    "DXA at the end of the anabolic phase and 1-2 years into the anti-resorptive, on the same scanner.",
)
