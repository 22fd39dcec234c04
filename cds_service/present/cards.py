"""Render a protocol `Decision` as CDS Hooks 2.0 cards (protocol §1, §6, §8, §9; notes §1.6 C1–C14).

Pure: no clock, no I/O; the UUID factory is injected so that output is reproducible.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, Literal

from cds_service.core.fhir_id import is_fhir_id
from cds_service.knowledge.indexed import Knowledge
from cds_service.present.card_detail import (
    agent_display,
    agent_spec,
    human_key,
    missing_short,
    outcome_detail,
    warning_detail,
)
from cds_service.present.markdown_safe import one_line
from cds_service.rules.decision import ANABOLICS, AgentAssessment, Decision, Outcome

SelectionBehavior = Literal["at-most-one", "any"]
Indicator = Literal["info", "warning", "critical"]

DECISION_EXTENSION = "osteo-cds/decision"
SUMMARY_LIMIT = 140  # CDS Hooks: summary < 140 characters
ELLIPSIS = "…"

_PLACEHOLDER = re.compile(r"\{(\w+)\}")

# Outcome cards by default (protocol §1); None = no card. Policy- and flag-dependent ones are resolved
# in `_outcome_indicator`.
_INDICATORS: dict[str, Indicator | None] = {
    "ESCALATE": "warning",
    "CONSIDER": "info",
    "RESPONSE_MET": "info",  # only with policy.response_met_card
    "NOT_ELIGIBLE_NOT_HIGH_RISK": None,
    "NOT_ELIGIBLE_NO_FIRST_LINE": None,
    "NOT_ELIGIBLE_DURATION": "info",  # only with policy.duration_card
    "NOT_ELIGIBLE_ADHERENCE": "info",
    "VERY_HIGH_RISK_PATHWAY": "warning",
    "SPECIALIST_REVIEW": "info",
    "INSUFFICIENT_DATA": "info",  # only when in scope
    "NOT_APPLICABLE": None,
    "ON_ANABOLIC": "info",  # only when decision.on_anabolic_card
}

TOPIC_DISPLAY: dict[str, str] = {
    "ESCALATE": "Escalation to sequential anabolic therapy: criteria met",
    "CONSIDER": "Escalation to sequential anabolic therapy: consider",
    "RESPONSE_MET": "Osteoporosis therapy on track",
    "NOT_ELIGIBLE_NOT_HIGH_RISK": "Not eligible: high risk not shown",
    "NOT_ELIGIBLE_NO_FIRST_LINE": "Not eligible: no first-line therapy",
    "NOT_ELIGIBLE_DURATION": "Not eligible yet: first-line therapy under 3 years",
    "NOT_ELIGIBLE_ADHERENCE": "Not eligible: therapy exposure inadequate",
    "VERY_HIGH_RISK_PATHWAY": "Very-high fracture risk pathway",
    "SPECIALIST_REVIEW": "Specialist review",
    "INSUFFICIENT_DATA": "Insufficient data",
    "NOT_APPLICABLE": "Not applicable",
    "ON_ANABOLIC": "Anabolic course ending: plan the follow-on",
    "DENOSUMAB_OVERDUE": "Denosumab overdue",
    "ANABOLIC_FOLLOW_ON_MISSING": "Anabolic course ended without follow-on anti-resorptive",
}


def topic_code(key: str) -> str:
    """Epic keys overrides on `source.topic.code` (alphanumeric, static per card)."""
    return re.sub(r"[^A-Za-z0-9]", "", key)[:100]


def fit_summary(text: str) -> str:
    """One line, strictly under 140 characters; cut at a word boundary with an ellipsis if needed."""
    text = one_line(text)
    if len(text) < SUMMARY_LIMIT:
        return text
    cut = text[: SUMMARY_LIMIT - 2]
    space = cut.rfind(" ")
    if space > SUMMARY_LIMIT // 2:
        cut = cut[:space]
    cut = cut.rstrip(" ,;:-(") + ELLIPSIS
    assert len(cut) < SUMMARY_LIMIT
    return cut


def _outcome_indicator(decision: Decision, knowledge: Knowledge) -> Indicator | None:
    outcome = decision.outcome
    if outcome == "RESPONSE_MET" and not knowledge.policy.response_met_card:
        return None
    if outcome == "NOT_ELIGIBLE_DURATION" and not knowledge.policy.duration_card:
        return None
    if outcome == "INSUFFICIENT_DATA" and not decision.in_scope:
        return None
    if outcome == "ON_ANABOLIC" and not decision.on_anabolic_card:
        return None
    return _INDICATORS.get(outcome)


def _ranked(agents: tuple[AgentAssessment, ...]) -> list[AgentAssessment]:
    ranked = [a for a in agents if a.status != "excluded"]
    return sorted(ranked, key=lambda a: (a.rank is None, a.rank or 0))


def _first_line(decision: Decision) -> str:
    if decision.first_line_agent:
        return human_key(decision.first_line_agent)
    exposure = decision.evidence.exposure
    agents = [a for a in exposure.agents if a not in ANABOLICS] if exposure else []
    return human_key(agents[0]) if agents else "first-line therapy"


def _current_anabolic(decision: Decision, knowledge: Knowledge) -> str:
    agent = decision.anabolic_agent
    return agent_display(agent, knowledge).lower() if agent else "anabolic"


def _placeholders(decision: Decision, knowledge: Knowledge) -> dict[str, str]:
    ranked = _ranked(decision.agents)
    if decision.outcome == "ON_ANABOLIC":
        agent = _current_anabolic(decision, knowledge)
    else:
        agent = agent_display(ranked[0].agent, knowledge).lower() if ranked else "an anabolic"
    planned_end = decision.planned_end.isoformat() if decision.planned_end else None
    return {
        "first_line": _first_line(decision),
        "agent": agent,
        "reevaluate_from": (
            decision.reevaluate_from.isoformat() if decision.reevaluate_from else "a later date"
        ),
        "missing_list": ", ".join(missing_short(m) for m in decision.missing) or "see details",
        "planned_end": planned_end or f"within {knowledge.w.on_anabolic_card_days} days",
    }


def summary_for(key: str, decision: Decision, knowledge: Knowledge) -> str:
    """Fill the knowledge file's summary template `key` and fit it under 140 characters."""
    templates = knowledge.texts.summaries
    template = templates.get(key)
    if template is None and key == "CONSIDER_AT_TARGET":
        template = templates.get("CONSIDER")
    if template is None:
        template = f"Osteoporosis escalation check: {TOPIC_DISPLAY.get(key, human_key(key)).lower()}"
    values = {k: one_line(v) for k, v in _placeholders(decision, knowledge).items()}
    text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    text = text[:1].upper() + text[1:]
    return fit_summary(text)


def _suggestions(
    decision: Decision,
    knowledge: Knowledge,
    patient_id: str,
    behavior: SelectionBehavior,
    new_uuid: Callable[[], str],
) -> list[dict[str, Any]]:
    if not decision.suggestions_allowed or decision.rule == "R11":
        return []
    if decision.outcome not in ("ESCALATE", "CONSIDER"):
        return []
    out: list[dict[str, Any]] = []
    recommended = False
    for agent in _ranked(decision.agents):
        spec = agent_spec(agent.agent, knowledge)
        if spec is None:
            continue
        resource = {
            "resourceType": "MedicationRequest",
            "status": "draft",
            "intent": "proposal",
            "subject": {"reference": f"Patient/{patient_id}"},
            "medicationCodeableConcept": {
                "coding": [
                    {"system": spec.code.system, "code": spec.code.code, "display": spec.code.display}
                ],
                "text": spec.display,
            },
            "dosageInstruction": [{"text": spec.regimen}],
        }
        suggestion: dict[str, Any] = {"label": f"Consider {spec.display}: {spec.regimen}", "uuid": new_uuid()}
        if agent.status == "preferred" and not (recommended and behavior == "at-most-one"):
            suggestion["isRecommended"] = True
            recommended = True
        suggestion["actions"] = [
            {
                "type": "create",
                "description": f"Draft order for review (not signed): {spec.display}",
                "resource": resource,
            }
        ]
        out.append(suggestion)
    return out


def _prune(value: Any) -> Any:
    """Drop None / "" / [] / {} optional fields (CDS Hooks G2), recursively."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v is not None and v not in ("", [], {})}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def render_cards(
    decision: Decision,
    knowledge: Knowledge,
    *,
    patient_id: str,
    selection_behavior: SelectionBehavior,
    as_of_pinned: bool,
    new_uuid: Callable[[], str],
) -> list[dict[str, Any]]:
    """The cards of one decision: the outcome card (if any) then one critical card per warning.

    Raises ValueError for an invalid `patient_id` (not a FHIR id) or `selection_behavior`.
    """
    if not is_fhir_id(patient_id):
        raise ValueError("patient_id is not a valid FHIR id")
    if selection_behavior not in ("at-most-one", "any"):
        raise ValueError(f"unsupported selectionBehavior {selection_behavior!r}")
    if decision.rule == "R0":
        return []  # deceased: no cards and no warnings (protocol §1); under 50 keeps its warnings
    decision_json = decision.to_json()
    pinned = f"\n\nEvaluated as of {decision.as_of.isoformat()} (pinned)" if as_of_pinned else ""

    def card(key: str, indicator: Indicator, summary: str, uuid: str) -> dict[str, Any]:
        source = knowledge.model.card_source
        return {
            "uuid": uuid,
            "summary": summary,
            "indicator": indicator,
            "detail": "",
            "source": {
                "label": source.label,
                "url": source.url,
                "topic": {
                    "system": source.topic_system,
                    "code": topic_code(key),
                    "display": TOPIC_DISPLAY.get(key, human_key(key)),
                },
            },
            "overrideReasons": [
                {"system": r.system, "code": r.code, "display": r.display}
                for r in knowledge.model.override_reasons
            ],
        }

    cards: list[dict[str, Any]] = []
    indicator = _outcome_indicator(decision, knowledge)
    if indicator is not None:
        outcome: Outcome = decision.outcome
        key = "CONSIDER_AT_TARGET" if outcome == "CONSIDER" and decision.rule == "R11" else outcome
        main = card(outcome, indicator, summary_for(key, decision, knowledge), new_uuid())
        suggestions = _suggestions(decision, knowledge, patient_id, selection_behavior, new_uuid)
        main["detail"] = outcome_detail(decision, knowledge, with_suggestions=bool(suggestions)) + pinned
        if suggestions:
            main["suggestions"] = suggestions
            main["selectionBehavior"] = selection_behavior
        cards.append(main)
    seen: set[str] = set()
    for warning in decision.warnings:
        if warning.code in seen:
            continue
        seen.add(warning.code)
        extra = card(warning.code, "critical", summary_for(warning.code, decision, knowledge), new_uuid())
        extra["detail"] = warning_detail(warning, knowledge) + pinned
        cards.append(extra)
    out: list[dict[str, Any]] = []
    for raw in cards:
        item: dict[str, Any] = _prune(raw)
        item["extension"] = {DECISION_EXTENSION: copy.deepcopy(decision_json)}
        out.append(item)
    return out
