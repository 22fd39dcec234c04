"""Render a protocol `Decision` as typed CDS Hooks 2.0 cards (protocol §1, §6, §8, §9; notes §1.6).

Pure: no clock, no I/O; the UUID factory is injected so that output is reproducible. The cards are
`card_model.Card` objects, serialised only at the wire.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from cds_service.core.fhir_id import is_fhir_id
from cds_service.knowledge.indexed import Knowledge
from cds_service.present.card_detail import outcome_detail, warning_detail
from cds_service.present.card_model import (
    Action,
    Card,
    Coding,
    Indicator,
    Link,
    SelectionBehavior,
    Source,
    Suggestion,
)
from cds_service.present.card_text import (
    agent_spec,
    caution_of,
    decision_values,
    human_key,
    ranked,
    summary_text,
    text,
    when_past,
)
from cds_service.present.markdown_safe import one_line
from cds_service.rules.decision import Decision, Outcome

__all__ = [
    "DECISION_EXTENSION",
    "SelectionBehavior",
    "fit_summary",
    "render_cards",
    "summary_for",
    "topic_code",
]

DECISION_EXTENSION = "osteo-cds/decision"
SUMMARY_LIMIT = 140  # CDS Hooks: summary < 140 characters
ELLIPSIS = "…"

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
_SPECIALIST_RULES = ("R2", "R3", "R3c", "R7h", "R8", "R9a", "R13", "renal")

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


def fit_summary(summary: str) -> str:
    """One line, strictly under 140 characters; cut at a word boundary with an ellipsis if needed."""
    summary = one_line(summary)
    if len(summary) < SUMMARY_LIMIT:
        return summary
    cut = summary[: SUMMARY_LIMIT - 2]
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


def summary_key(decision: Decision) -> str:
    """The summary template of the outcome card: by outcome, and by rule where the reason differs."""
    outcome = decision.outcome
    if outcome == "CONSIDER" and decision.rule == "R11":
        return "CONSIDER_AT_TARGET"
    if outcome == "SPECIALIST_REVIEW" and decision.rule in _SPECIALIST_RULES:
        return f"SPECIALIST_REVIEW_{decision.rule}"
    if outcome == "ON_ANABOLIC" and when_past(decision.planned_end, decision.as_of):
        return "ON_ANABOLIC_ENDED"
    return outcome


def summary_for(key: str, decision: Decision, knowledge: Knowledge) -> str:
    """Fill the knowledge file's summary template `key` and fit it under 140 characters."""
    return fit_summary(summary_text(knowledge, key, decision_values(decision, knowledge)))


def _suggestions(
    decision: Decision,
    knowledge: Knowledge,
    values: dict[str, str],
    *,
    patient_id: str,
    behavior: SelectionBehavior,
    new_uuid: Callable[[], str],
) -> list[Suggestion]:
    """One draft-order suggestion per non-excluded agent; a `caution` one says so in its label."""
    if not decision.suggestions_allowed or decision.rule == "R11":
        return []
    if decision.outcome not in ("ESCALATE", "CONSIDER"):
        return []
    out: list[Suggestion] = []
    recommended = False
    for agent in ranked(decision.agents):  # excluded agents never get a button
        spec = agent_spec(agent.agent, knowledge)
        if spec is None:
            continue
        caution = agent.status == "caution"
        named = {"agent_display": spec.display, "regimen": spec.regimen}
        if caution:
            named["caution"] = caution_of(agent)
        label = text(
            knowledge, "suggestion_label_caution" if caution else "suggestion_label", values, **named
        )
        description = text(
            knowledge, "action_description_caution" if caution else "action_description", values, **named
        )
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
        is_recommended = agent.status == "preferred" and not (recommended and behavior == "at-most-one")
        recommended = recommended or is_recommended
        out.append(
            Suggestion(
                label=label,
                uuid=new_uuid(),
                actions=[Action("create", description, resource)],
                is_recommended=is_recommended,
                agent=agent.agent,
                status=agent.status,
            )
        )
    return out


def _links(knowledge: Knowledge) -> list[Link]:
    """The sources as `absolute` links with short labels (never links inside the detail); a source
    without a URL is named in the detail's "also cited" line."""
    return [Link(src.label, src.url) for src in knowledge.model.sources if src.url]


def render_cards(
    decision: Decision,
    knowledge: Knowledge,
    *,
    patient_id: str,
    selection_behavior: SelectionBehavior,
    as_of_pinned: bool,
    new_uuid: Callable[[], str],
) -> list[Card]:
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
    values = decision_values(decision, knowledge)
    pinned = f"\n\nEvaluated as of {decision.as_of.isoformat()} (pinned)" if as_of_pinned else ""
    source = knowledge.model.card_source
    reasons = [Coding(r.system, r.code, r.display) for r in knowledge.model.override_reasons]

    unshared = [decision_json]  # the first card takes the fresh object itself; later cards copies

    def card(key: str, indicator: Indicator, summary_template: str, detail: str) -> Card:
        topic = Coding(source.topic_system, topic_code(key), TOPIC_DISPLAY.get(key, human_key(key)))
        extension = unshared.pop() if unshared else copy.deepcopy(decision_json)
        return Card(
            uuid=new_uuid(),
            summary=fit_summary(summary_text(knowledge, summary_template, values)),
            indicator=indicator,
            source=Source(source.label, source.url, topic=topic),
            kind=key,
            rule=decision.rule,
            detail=detail + pinned,
            override_reasons=list(reasons),
            extension={DECISION_EXTENSION: extension},
        )

    cards: list[Card] = []
    indicator = _outcome_indicator(decision, knowledge)
    if indicator is not None:
        outcome: Outcome = decision.outcome
        main = card(outcome, indicator, summary_key(decision), "")
        suggestions = _suggestions(
            decision, knowledge, values, patient_id=patient_id, behavior=selection_behavior, new_uuid=new_uuid
        )
        main.detail = outcome_detail(decision, knowledge, values, with_suggestions=bool(suggestions)) + pinned
        if suggestions:
            main.suggestions = suggestions
            main.selection_behavior = selection_behavior
        cards.append(main)
    seen: set[str] = set()
    for warning in decision.warnings:
        if warning.code in seen:
            continue
        seen.add(warning.code)
        cards.append(card(warning.code, "critical", warning.code, warning_detail(warning, knowledge, values)))
    if cards:  # the sources once per response: on its first card
        cards[0].links = _links(knowledge)
    return cards
