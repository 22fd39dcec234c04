"""Markdown `detail` of the cards (protocol §8), in reading order (docs/cards.md).

First the lead sentence and at most eight lines of key evidence (`card_evidence`: the DXAs and deltas
against the targets, the exposure, the rank-1 agent and why, the labs); then, compact and deduplicated,
the rest (agents, plan, follow-on, before starting, monitoring, caveats, missing inputs, not checked).
Sources are card links, never links inside the detail.

Every string taken from the decision (and so possibly from FHIR) goes through `markdown_safe.escape`;
texts of the knowledge file are trusted; numbers are rounded by `card_text`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.texts import fill
from cds_service.present.card_evidence import (
    key_evidence,
    labelled,
    reasons_text,
    stated_by_exposure,
)
from cds_service.present.card_text import agent_display, human_key, ranked, text, when_past
from cds_service.present.markdown_safe import escape, escape_inline
from cds_service.rules.decision import AgentAssessment, Decision, FollowOnAssessment, WarningDetail

__all__ = ["key_evidence", "outcome_detail", "warning_detail"]

_FOLLOWUP_REASON = re.compile(r"DXA with total hip on or after", re.IGNORECASE)
_ANY_CALCIUM_LINE = re.compile(r"calcium and vitamin d", re.IGNORECASE)
_STATUS_ORDER = ("preferred", "option", "caution", "excluded")
_esc = escape_inline  # every fragment below follows a label or other text on its line


def _sentences(items: Iterable[str]) -> list[str]:
    """Items joined as sentences: each ends with a full stop."""
    return [item if item.endswith((".", "!", "?")) else item + "." for item in items if item]


def _follow_on_display(agent: str, knowledge: Knowledge) -> str:
    specs = {str(key): spec.display for key, spec in knowledge.model.follow_on_agents.items()}
    return specs.get(agent) or _esc(human_key(agent).capitalize())


# ----- the rest, compact ---------------------------------------------------------------------
def _agent_status(agent: AgentAssessment, ranked_view: bool) -> str:
    if agent.status == "excluded":
        return "excluded"
    if ranked_view:
        return f"{agent.rank}, {agent.status}"
    # specialist review: the protocol's rank is not a recommendation
    return f"rank {agent.rank}" + (", caution" if agent.status == "caution" else "")


def agents_line(decision: Decision, knowledge: Knowledge) -> str:
    """Every agent with rank and status (on an escalation card, every agent but the rank-1 one, which the
    key evidence shows with its reasons); agents sharing the same reasons are listed once with them."""
    if not decision.agents:
        return ""
    order = ranked(decision.agents)
    ranked_view = decision.outcome in ("ESCALATE", "CONSIDER")
    listed = [*order, *(a for a in decision.agents if a.status == "excluded")]
    if ranked_view and order:
        listed = listed[1:]  # the rank-1 line of the key evidence
    groups: dict[str, list[str]] = {}
    for position, agent in enumerate(listed):
        reasons = reasons_text(agent.reasons)
        head = f"{agent_display(agent.agent, knowledge)} ({_agent_status(agent, ranked_view)})"
        groups.setdefault(reasons or f"\0{position}", []).append(head)
    items = [", ".join(heads) + ("" if why.startswith("\0") else f": {why}") for why, heads in groups.items()]
    return labelled("Other agents" if ranked_view and order else "Agents", items)


def _grouped(items: Iterable[FollowOnAssessment], knowledge: Knowledge) -> str:
    by_status: dict[str, dict[str, list[str]]] = {}
    for item in items:
        reasons = reasons_text(item.reasons)
        by_status.setdefault(item.status, {}).setdefault(reasons, []).append(
            _follow_on_display(item.agent, knowledge)
        )
    parts: list[str] = []
    for status in sorted(by_status, key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 9):
        groups = [", ".join(names) + (f" ({why})" if why else "") for why, names in by_status[status].items()]
        parts.append(f"{_esc(status)}: " + "; ".join(groups))
    return ". ".join(parts)


def follow_on_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    if decision.follow_on:
        return f"Follow-on: {_grouped(decision.follow_on, knowledge)}"
    if "egfr" in decision.missing and (decision.agents or decision.outcome in ("ESCALATE", "CONSIDER")):
        return f"Follow-on: {text(knowledge, 'obtain_egfr_line', values)}"
    return ""


def caveats_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    stated = stated_by_exposure(decision)
    lines = [_esc(c) for c in dict.fromkeys(decision.caveats) if c != stated]
    if decision.evidence.aace_very_high_risk:
        lines.append(text(knowledge, "aace_line", values))
    return labelled("Caveats", lines)


def not_checked_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    concepts = [
        gap.concept + (f" ({gap.checked})" if gap.checked else "") for gap in knowledge.model.concept_gaps
    ]
    listed = {gap.concept for gap in knowledge.model.concept_gaps}
    concepts += [
        _esc(line.split(":", 1)[0])
        for line in decision.evidence.not_checked
        if line.split(":", 1)[0] not in listed
    ]
    return text(knowledge, "not_checked_line", values, concepts="; ".join(concepts)) if concepts else ""


def _missing_line(code: str, decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    template = knowledge.texts.missing_lines.get(code)
    line = fill(template, values) if template else f"{_esc(human_key(code))}: not available."
    if code == "followup_dxa":
        wanted = [_esc(r) for r in decision.reasons if _FOLLOWUP_REASON.search(r)]
        if wanted:
            line += " Required: " + "; ".join(wanted) + "."
    return line


def missing_line(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> str:
    return labelled(
        "Missing", (_missing_line(code, decision, knowledge, values) for code in decision.missing), " "
    )


# ----- assembly ------------------------------------------------------------------------------
def _lead(decision: Decision, knowledge: Knowledge, values: dict[str, str]) -> list[str]:
    outcome = decision.outcome
    if outcome in ("ESCALATE", "CONSIDER") and decision.rule != "R11":
        return [text(knowledge, "criteria_line", values)]
    if outcome == "NOT_ELIGIBLE_DURATION" and decision.reevaluate_from is not None:
        return [text(knowledge, "reevaluate_line", values)]
    if outcome == "ON_ANABOLIC" and when_past(decision.planned_end, decision.as_of):
        return [text(knowledge, "ended_line", values)]
    if outcome == "SPECIALIST_REVIEW" and decision.agents:
        return [text(knowledge, "specialist_agents_line", values)]
    return []


def outcome_detail(
    decision: Decision, knowledge: Knowledge, values: dict[str, str], *, with_suggestions: bool
) -> str:
    """The outcome card's detail (without the pinned line)."""
    evidence = decision.evidence
    escalation = decision.outcome in ("ESCALATE", "CONSIDER")
    lead = _lead(decision, knowledge, values)
    if decision.outcome == "INSUFFICIENT_DATA":
        lead.append(missing_line(decision, knowledge, values))
    key = "\n".join(f"- {line}" for line in key_evidence(decision, knowledge, values))
    rest: list[str] = [agents_line(decision, knowledge)]
    if escalation:
        rest.append(text(knowledge, "no_contraindication_line", values))
    rest.append(labelled("Plan", _sentences(_esc(p) for p in evidence.plan), " "))
    rest.append(follow_on_line(decision, knowledge, values))
    before = [_esc(b) for b in evidence.before_starting]
    if escalation and not any(
        _ANY_CALCIUM_LINE.search(t) for t in (*evidence.before_starting, *decision.caveats)
    ):
        before.append(text(knowledge, "supplements_line", values))
    rest.append(labelled("Before starting", _sentences(before), " "))
    rest.append(labelled("Monitoring", _sentences(_esc(m) for m in evidence.monitoring), " "))
    rest.append(caveats_line(decision, knowledge, values))
    if decision.outcome != "INSUFFICIENT_DATA":
        rest.append(missing_line(decision, knowledge, values))
    rest.append(not_checked_line(decision, knowledge, values))
    if escalation:
        rest.append(text(knowledge, "targets_line", values))
    if with_suggestions:
        rest.append(text(knowledge, "suggest_only_line", values))
    rest.append(labelled("Also cited", (src.label for src in knowledge.model.sources if not src.url)))
    blocks = [*lead, key, "\n\n".join(r for r in rest if r)]
    return "\n\n".join(b for b in blocks if b)


def warning_detail(warning: WarningDetail, knowledge: Knowledge, values: dict[str, str]) -> str:
    """A warning card's detail: the evidence sentence and the fixed safety sentence."""
    name = "denosumab_overdue_detail" if warning.code == "DENOSUMAB_OVERDUE" else "follow_on_missing_detail"
    return "\n\n".join(p for p in (escape(warning.text), text(knowledge, name, values)) if p)
