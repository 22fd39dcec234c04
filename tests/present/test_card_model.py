"""Typed cards serialise to the CDS Hooks 2.0 card shape, omitting empty optional fields (G2)."""

from __future__ import annotations

import orjson

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
