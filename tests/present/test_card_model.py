"""Typed cards serialise to the CDS Hooks 2.0 card shape, omitting empty optional fields (G2)."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from cds_service.core.json_empty import drop_empty
from cds_service.present.card_model import Action, Card, Coding, HookResponse, Link, Source, Suggestion


def minimal() -> Card:
    return Card("u-1", "A summary", "info", Source("Service"), kind="ESCALATE", rule="R12")


def test_minimal_card_has_only_the_required_fields() -> None:
    assert minimal().to_wire() == {
        "uuid": "u-1",
        "summary": "A summary",
        "indicator": "info",
        "source": {"label": "Service"},
    }  # kind and rule are for the ledger and metrics, never on the wire


def test_full_card_wire_names() -> None:
    card = minimal()
    card.detail = "detail"
    card.source = Source(
        "Service", "https://example.org", "https://example.org/i.png", Coding("urn:t", "X", "x")
    )
    card.suggestions = [
        Suggestion("Teriparatide", "s-1", [Action("create", "Draft", {"resourceType": "MedicationRequest"})]),
        Suggestion("Romosozumab", "s-2", is_recommended=True, agent="romosozumab"),
    ]
    card.selection_behavior = "at-most-one"
    card.override_reasons = [Coding("urn:r", "patient-refuses", "Patient refuses")]
    card.links = [Link("Guideline", "https://example.org/g")]
    card.extension = {"x": {"empty": []}}
    wire = card.to_wire()
    assert list(wire) == [
        "uuid",
        "summary",
        "indicator",
        "detail",
        "source",
        "suggestions",
        "selectionBehavior",
        "overrideReasons",
        "links",
        "extension",
    ]
    assert wire["source"]["topic"] == {"system": "urn:t", "code": "X", "display": "x"}
    assert wire["suggestions"][0] == {
        "label": "Teriparatide",
        "uuid": "s-1",
        "actions": [
            {"type": "create", "description": "Draft", "resource": {"resourceType": "MedicationRequest"}}
        ],
    }
    assert wire["suggestions"][1] == {"label": "Romosozumab", "uuid": "s-2", "isRecommended": True}
    assert wire["links"] == [{"label": "Guideline", "url": "https://example.org/g", "type": "absolute"}]
    assert wire["extension"] == {"x": {"empty": []}}  # owned by the extension: passed through


def test_selection_behavior_only_with_suggestions() -> None:
    card = minimal()
    card.selection_behavior = "any"
    assert "selectionBehavior" not in card.to_wire()


def test_a_smart_link_appended_after_rendering_carries_its_app_context() -> None:
    card = minimal()
    card.links.append(Link("Open the app", "https://app.example.org/launch", "smart", "patient=1"))
    card.links.append(Link("Reference", "https://example.org/r", "absolute", "ignored"))
    assert card.to_wire()["links"] == [
        {
            "label": "Open the app",
            "url": "https://app.example.org/launch",
            "type": "smart",
            "appContext": "patient=1",
        },
        {"label": "Reference", "url": "https://example.org/r", "type": "absolute"},
    ]


def test_a_profile_edits_the_suggested_resource_in_place() -> None:
    resource = {"medicationCodeableConcept": {"coding": [{"system": "rxnorm", "code": "1"}]}}
    card = minimal()
    card.suggestions = [Suggestion("Drug", "s-1", [Action("create", "Draft", resource)])]
    for suggestion in card.suggestions:
        for action in suggestion.actions:
            assert action.resource is not None
            action.resource["medicationCodeableConcept"]["coding"][0]["system"] = "urn:epic:erx"
    coding = card.to_wire()["suggestions"][0]["actions"][0]["resource"]["medicationCodeableConcept"]["coding"]
    assert coding == [{"system": "urn:epic:erx", "code": "1"}]


def test_response_keeps_an_empty_card_list() -> None:
    assert HookResponse([]).to_wire() == {"cards": []}
    assert orjson.loads(orjson.dumps(HookResponse([minimal()]).to_wire()))["cards"][0]["uuid"] == "u-1"


# -- to_wire omits every empty value itself: the wire writes it without drop_empty, and the bytes are the
# -- ones drop_empty made of the previous to_wire (which left empties inside arrays and draft orders) -------


def _previous_to_wire(card: Card) -> dict[str, Any]:
    def clean(wire: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in wire.items() if value is not None and value not in ("", [], {})}

    def coding(c: Coding) -> dict[str, Any]:
        return clean({"system": c.system, "code": c.code, "display": c.display})

    def suggestion(s: Suggestion) -> dict[str, Any]:
        wire: dict[str, Any] = {"label": s.label, "uuid": s.uuid}
        if s.is_recommended:
            wire["isRecommended"] = True
        if s.actions:
            wire["actions"] = [
                clean(
                    {
                        "type": a.type,
                        "description": a.description,
                        "resource": a.resource,
                        "resourceId": a.resource_id,
                    }
                )
                for a in s.actions
            ]
        return wire

    def link(k: Link) -> dict[str, Any]:
        context = k.app_context if k.type == "smart" else None
        return clean({"label": k.label, "url": k.url, "type": k.type, "appContext": context})

    src = card.source
    source = clean(
        {
            "label": src.label,
            "url": src.url,
            "icon": src.icon,
            "topic": coding(src.topic) if src.topic else None,
        }
    )
    return clean(
        {
            "uuid": card.uuid,
            "summary": card.summary,
            "indicator": card.indicator,
            "detail": card.detail,
            "source": source,
            "suggestions": [suggestion(s) for s in card.suggestions],
            "selectionBehavior": card.selection_behavior if card.suggestions else None,
            "overrideReasons": [coding(r) for r in card.override_reasons],
            "links": [link(k) for k in card.links],
            "extension": card.extension,
        }
    )


_TEXT = ["", "x", "Teriparatide 20 µg"]
_OPTIONAL: list[Any] = [None, "", "x"]
_JSON: list[Any] = [None, "", [], {}, 0, False, "v", [None, ""], {"a": None}, {"extension": {"e": ""}}, ({},)]


def _resource(rng: random.Random, depth: int = 3) -> Any:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(_JSON)
    if rng.random() < 0.5:
        return [_resource(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    keys = ["coding", "text", "extension", "cards", "display", "system"]
    return {rng.choice(keys): _resource(rng, depth - 1) for _ in range(rng.randint(0, 4))}


def _random_card(rng: random.Random) -> Card:
    def coding() -> Coding:
        return Coding(rng.choice(_TEXT), rng.choice(_TEXT), rng.choice(_OPTIONAL))

    card = Card(
        rng.choice(_TEXT),
        rng.choice(_TEXT),
        rng.choice(["info", "warning", "critical"]),
        Source(rng.choice(_TEXT), rng.choice(_OPTIONAL), rng.choice(_OPTIONAL), rng.choice([None, coding()])),
        kind="ESCALATE",
        detail=rng.choice(_TEXT),
    )
    card.suggestions = [
        Suggestion(
            rng.choice(_TEXT),
            rng.choice(_TEXT),
            [Action("create", rng.choice(_TEXT), rng.choice([None, _resource(rng)]), rng.choice(_OPTIONAL))]
            * rng.randint(0, 2),
            is_recommended=rng.random() < 0.5,
        )
        for _ in range(rng.randint(0, 3))
    ]
    card.selection_behavior = rng.choice([None, "at-most-one", "any"])
    card.override_reasons = [coding() for _ in range(rng.randint(0, 3))]
    card.links = [
        Link(rng.choice(_TEXT), rng.choice(_TEXT), rng.choice(["absolute", "smart"]), rng.choice(_OPTIONAL))
        for _ in range(rng.randint(0, 2))
    ]
    card.extension = rng.choice([{}, {"osteo-cds/decision": {"reasons": [], "rule": ""}}])
    return card


@pytest.mark.parametrize("seed", range(30))
def test_to_wire_is_what_drop_empty_made_of_the_previous_one(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        cards = [_random_card(rng) for _ in range(rng.randint(0, 3))]
        wire = HookResponse(cards).to_wire()
        previous = drop_empty({"cards": [_previous_to_wire(card) for card in cards]})
        assert orjson.dumps(wire) == orjson.dumps(previous)
        assert orjson.dumps(drop_empty(wire)) == orjson.dumps(wire)
