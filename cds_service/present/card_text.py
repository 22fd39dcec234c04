"""Numbers, dates and named values of the card templates (knowledge file `texts`).

Numbers are rounded as the protocol compares them (half-up: T-score 0.1, ΔT 0.01, % change 0.1); the
values a template may name are `knowledge.texts.CARD_PLACEHOLDERS` plus every threshold and window.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import AgentSpec
from cds_service.knowledge.texts import fill
from cds_service.present.markdown_safe import escape, one_line
from cds_service.rules.decision import ANABOLICS, AgentAssessment, Decision

_T_STEP = Decimal("0.1")
_DELTA_STEP = Decimal("0.01")
_PCT_STEP = Decimal("0.1")
_BMD_STEP = Decimal("0.001")
_SITE_NAMES = {"total_hip": "hip", "lumbar_spine": "spine"}
_FLAG = re.compile(r"^R9[bc]: ([^:;]+)")


def _round(value: Decimal, step: Decimal) -> Decimal:
    return value.quantize(step, rounding=ROUND_HALF_UP)


def t_score(value: Decimal) -> str:
    return format(_round(value, _T_STEP), "f")


def delta_t(value: Decimal) -> str:
    return format(_round(value, _DELTA_STEP), "+f")


def pct(value: Decimal) -> str:
    return format(_round(value, _PCT_STEP), "+f")


def bmd(value: Decimal) -> str:
    return format(_round(value, _BMD_STEP), "f")


def plain(value: Decimal) -> str:
    return format(value, "f")


def human_key(key: str) -> str:
    """`zoledronic_acid` -> `zoledronic acid` (a key, not FHIR text; still collapsed to one line)."""
    return " ".join(key.replace("_", " ").split())


def agent_spec(agent: str, knowledge: Knowledge) -> AgentSpec | None:
    """The knowledge file's entry for an anabolic agent key, if any."""
    specs: dict[str, AgentSpec] = {str(key): spec for key, spec in knowledge.model.agents.items()}
    return specs.get(agent)


def agent_display(agent: str, knowledge: Knowledge) -> str:
    """Display name of an anabolic (trusted from knowledge, else the escaped key)."""
    spec = agent_spec(agent, knowledge)
    return spec.display if spec is not None else escape(human_key(agent).capitalize())


def caution_of(agent: AgentAssessment) -> str:
    """The short caution of a `caution` agent: its first caution reason up to the first colon."""
    reasons = agent.cautions or agent.reasons
    first = next((r for r in reasons if r.strip()), "see details")
    return one_line(first.split(":", 1)[0])


def ranked(agents: tuple[AgentAssessment, ...]) -> list[AgentAssessment]:
    """Non-excluded agents by rank."""
    usable = [a for a in agents if a.status != "excluded"]
    return sorted(usable, key=lambda a: (a.rank is None, a.rank or 0))


def _first_line(decision: Decision) -> str:
    if decision.first_line_agent:
        return human_key(decision.first_line_agent)
    exposure = decision.evidence.exposure
    agents = [a for a in exposure.agents if a not in ANABOLICS] if exposure else []
    return human_key(agents[0]) if agents else "first-line therapy"


def _sites_missed(decision: Decision) -> str:
    """`hip BMD target` / `hip and spine BMD targets`: the deciding sites whose target was not met."""
    missed = [_SITE_NAMES.get(r.site, human_key(r.site)) for r in decision.evidence.responses if not r.met]
    sites = list(dict.fromkeys(missed))
    if not sites:
        return "BMD targets"
    return " and ".join(sites) + (" BMD target" if len(sites) == 1 else " BMD targets")


def _cap_reason(decision: Decision, knowledge: Knowledge) -> str:
    """Why a CONSIDER is capped: a work-up flag (R9b/R9c), else the missing inputs, else the caveats."""
    flags = [m.group(1).strip() for r in decision.reasons if (m := _FLAG.match(r))]
    if flags:
        return flags[0]
    if decision.missing:
        return "missing " + ", ".join(missing_name(m, knowledge) for m in decision.missing)
    return "see caveats"


def _iso(day: date | None, fallback: str) -> str:
    return day.isoformat() if day else fallback


def decision_values(decision: Decision, knowledge: Knowledge) -> dict[str, str]:
    """The named values of one decision (FHIR-derived ones collapsed to one line; no Markdown)."""
    order = ranked(decision.agents)
    top = order[0] if order else None
    if decision.outcome == "ON_ANABOLIC" and decision.anabolic_agent:
        agent = agent_display(decision.anabolic_agent, knowledge).lower()
    else:
        agent = agent_display(top.agent, knowledge).lower() if top else "an anabolic"
    warning = next((w for w in decision.warnings if w.code == "DENOSUMAB_OVERDUE"), None)
    course = next((w for w in decision.warnings if w.code == "ANABOLIC_FOLLOW_ON_MISSING"), None)
    course_agent = course.agent if course and course.agent else "anabolic"
    values = {
        **knowledge.text_values,
        "first_line": _first_line(decision),
        "agent": agent,
        "agent_note": ", caution" if top is not None and top.status == "caution" else "",
        "sites_missed": _sites_missed(decision),
        "cap_reason": _cap_reason(decision, knowledge),
        "reevaluate_from": _iso(decision.reevaluate_from, "a later date"),
        "missing_list": ", ".join(missing_name(m, knowledge) for m in decision.missing) or "see details",
        "planned_end": _iso(decision.planned_end, f"within {knowledge.windows.on_anabolic_card_days} days"),
        "last_dose": _iso(warning.last if warning else None, "not recorded"),
        "due_date": _iso(warning.due if warning else None, "not recorded"),
        "course_agent": agent_display(course_agent, knowledge),
        "course_end": _iso(course.last if course else None, "recently"),
        "target_t": t_score(decision.evidence.target_t) if decision.evidence.target_t is not None else "",
        "concepts": "",
        "agent_display": "",
        "regimen": "",
        "caution": "",
    }
    return {name: one_line(value) for name, value in values.items()}


def missing_name(code: str, knowledge: Knowledge) -> str:
    return knowledge.texts.missing_names.get(code) or human_key(code)


def text(knowledge: Knowledge, name: str, values: dict[str, str], **extra: str) -> str:
    """Template `name` of `texts` filled with `values` (and `extra`)."""
    return knowledge.texts.line(name, {**values, **extra})


def summary_text(knowledge: Knowledge, key: str, values: dict[str, str]) -> str:
    """Summary template `key` (validated present at start-up) filled with `values`."""
    template = knowledge.texts.summaries[key]
    filled = fill(template, values)
    return filled[:1].upper() + filled[1:]


def when_past(day: date | None, as_of: date) -> bool:
    """A date on or before `as_of` is written as a fact, a later one as a plan."""
    return day is not None and day <= as_of
