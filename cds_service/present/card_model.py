"""Typed CDS Hooks 2.0 cards: what the renderer returns and what the ledger and metrics consume.

Serialised to JSON only at the wire (`to_wire`), with empty values omitted (CDS Hooks G2) at every level:
`to_wire` gives what `drop_empty` would leave of it, so the wire writes it as it is.
Lists are plain and mutable on purpose: a post-render step (an EHR profile changing the suggestion
code system or `selectionBehavior`, the SMART app appending a `smart` link) edits the card in place
before the response is written.

Plain `dataclass(slots=True)`: construction is a few attribute stores, no validation pass (the renderer
is the only producer and mypy checks it); see benchmarks/card_model.py for the measured cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cds_service.core.json_empty import drop_empty

Indicator = Literal["info", "warning", "critical"]
LinkType = Literal["absolute", "smart"]
ActionType = Literal["create", "update", "delete"]
SelectionBehavior = Literal["at-most-one", "any"]


@dataclass(slots=True)
class Coding:
    system: str
    code: str
    display: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _without_empty({"system": self.system, "code": self.code, "display": self.display})


@dataclass(slots=True)
class Source:
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None

    def to_wire(self) -> dict[str, Any]:
        topic = self.topic.to_wire() if self.topic else None
        return _without_empty({"label": self.label, "url": self.url, "icon": self.icon, "topic": topic})


@dataclass(slots=True)
class Link:
    """`absolute`: a page opened outside the EHR; `smart`: a SMART app launched with `appContext`."""

    label: str
    url: str
    type: LinkType = "absolute"
    app_context: str | None = None

    def to_wire(self) -> dict[str, Any]:
        context = self.app_context if self.type == "smart" else None  # cds-resp-3: smart links only
        return _without_empty(
            {"label": self.label, "url": self.url, "type": self.type, "appContext": context}
        )


@dataclass(slots=True)
class Action:
    type: ActionType
    description: str
    resource: dict[str, Any] | None = None  # a FHIR resource, edited in place by EHR profiles
    resource_id: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return _without_empty(
            {
                "type": self.type,
                "description": self.description,
                "resource": drop_empty(self.resource),
                "resourceId": self.resource_id,
            }
        )


@dataclass(slots=True)
class Suggestion:
    label: str
    uuid: str
    actions: list[Action] = field(default_factory=list)
    is_recommended: bool = False
    agent: str | None = None  # the anabolic it proposes (ledger only, not on the wire)
    status: str | None = None  # that agent's status: preferred, option or caution (not on the wire)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"label": self.label, "uuid": self.uuid}
        if self.is_recommended:
            wire["isRecommended"] = True
        if self.actions:
            wire["actions"] = _non_empty([action.to_wire() for action in self.actions])
        return _without_empty(wire)


@dataclass(slots=True)
class Card:
    """One card. `kind` (outcome or warning code) and `rule` are for the ledger and metrics only."""

    uuid: str
    summary: str
    indicator: Indicator
    source: Source
    kind: str
    rule: str | None = None
    detail: str = ""
    suggestions: list[Suggestion] = field(default_factory=list)
    selection_behavior: SelectionBehavior | None = None
    override_reasons: list[Coding] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    extension: dict[str, Any] = field(default_factory=dict)  # owned by the extension: passed through

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "uuid": self.uuid,
            "summary": self.summary,
            "indicator": self.indicator,
            "detail": self.detail,
            "source": self.source.to_wire(),
            "suggestions": _non_empty([s.to_wire() for s in self.suggestions]),
            "selectionBehavior": self.selection_behavior if self.suggestions else None,
            "overrideReasons": _non_empty([r.to_wire() for r in self.override_reasons]),
            "links": _non_empty([link.to_wire() for link in self.links]),
            "extension": self.extension,
        }
        return _without_empty(wire)


@dataclass(slots=True)
class HookResponse:
    """The body of a hook call: `{"cards": [...]}` (an empty list is kept)."""

    cards: list[Card] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"cards": _non_empty([card.to_wire() for card in self.cards])}


def _without_empty(wire: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in wire.items() if value is not None and value not in ("", [], {})}


def _non_empty(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The array without empty objects (`drop_empty` removes them from arrays)."""
    return items if all(items) else [item for item in items if item]
