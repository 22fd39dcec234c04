"""Every shared scenario's cards meet the layout of docs/cards.md (issue 11); the doc's examples are current.

Layout: summary < 140 characters; the outcome card's detail opens with at most one lead sentence and at
most eight lines of key evidence; no link inside the detail (sources are `links`, type `absolute`, on the
first card only); a `caution` agent says so on its button; excluded agents have none.
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import sys
from datetime import date
from pathlib import Path
from types import ModuleType

import pytest

from cds_service.app import create_app
from cds_service.config import Settings
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.card_model import Card
from cds_service.present.cards import render_cards
from cds_service.rules.decision import Decision
from cds_service.wire.service import PatientViewService
from tests.support.app_settings import test_settings
from tests.support.fixtures import hook_request, load_scenario_bundle, load_scenario_index

KNOWLEDGE = load_knowledge()
SERVICE = PatientViewService(Settings(), KNOWLEDGE)
SCENARIOS = load_scenario_index()
TOOL = Path(__file__).resolve().parents[2] / "tools" / "card_examples.py"
DOC = Path(__file__).resolve().parents[2] / "docs" / "cards.md"
# Regression guard on the ESCALATE detail (median 4.9 KB before issue 11, 2.4 KB now; docs/cards.md "Sizes").
ESCALATE_MEDIAN_MAX_BYTES = 2_450
DETAIL_MAX_BYTES = 2_900


def rendered(scenario: dict[str, str]) -> tuple[Decision, list[Card]]:
    bundle = load_scenario_bundle(scenario["id"])
    resources = [entry["resource"] for entry in bundle["entry"]]
    decision = SERVICE.decide(resources, scenario["id"], date.fromisoformat(scenario["as_of"]))
    cards = render_cards(
        decision,
        KNOWLEDGE,
        patient_id=scenario["id"],
        selection_behavior="at-most-one",
        as_of_pinned=False,
        new_uuid=lambda: "00000000-0000-4000-8000-000000000001",
    )
    return decision, cards


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_scenario_cards_meet_the_layout(scenario: dict[str, str]) -> None:
    decision, cards = rendered(scenario)
    for position, card in enumerate(cards):
        assert len(card.summary) < 140
        assert "](" not in card.detail, "no link inside the detail"
        assert len(card.detail.encode("utf-8")) <= DETAIL_MAX_BYTES, card.kind
        if position == 0:
            assert card.links and all(link.type == "absolute" for link in card.links)
        else:
            assert card.links == []
    if not cards or cards[0].kind != decision.outcome:
        return
    blocks = cards[0].detail.split("\n\n")
    key = next((b for b in blocks[:3] if b.startswith("- ")), "")
    assert len(key.splitlines()) <= 8
    assert all(not b.startswith("- ") for b in blocks if b is not key), "one key-evidence list only"
    statuses = {a.agent: a for a in decision.agents}
    for suggestion in cards[0].suggestions:
        assert suggestion.agent is not None
        agent = statuses[suggestion.agent]
        assert agent.status != "excluded"
        assert ("— caution:" in suggestion.label) == (agent.status == "caution")


def test_escalate_detail_size() -> None:
    sizes = []
    for scenario in SCENARIOS:
        _decision, cards = rendered(scenario)
        sizes += [len(c.detail.encode("utf-8")) for c in cards if c.kind == "ESCALATE"]
    assert len(sizes) >= 5
    assert statistics.median(sizes) <= ESCALATE_MEDIAN_MAX_BYTES


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("card_examples", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["card_examples"] = module
    spec.loader.exec_module(module)
    return module


def test_docs_examples_are_current() -> None:
    tool = _load_tool()
    current = DOC.read_text(encoding="utf-8")
    assert tool.updated_doc(current, tool.generated()) == current, "run tools/card_examples.py"


def test_every_outcome_with_a_card_has_an_example() -> None:
    tool = _load_tool()
    shown = {example.title.split(" ")[0] for example in tool.EXAMPLES}
    with_cards = {"ESCALATE", "CONSIDER", "RESPONSE_MET", "NOT_ELIGIBLE_DURATION", "NOT_ELIGIBLE_ADHERENCE"}
    with_cards |= {"VERY_HIGH_RISK_PATHWAY", "SPECIALIST_REVIEW", "INSUFFICIENT_DATA", "ON_ANABOLIC"}
    with_cards |= {"DENOSUMAB_OVERDUE", "ANABOLIC_FOLLOW_ON_MISSING"}
    assert with_cards <= shown


def test_decision_log_reads_the_typed_cards(caplog: pytest.LogCaptureFixture) -> None:
    """The decision log line counts the cards by kind and their suggestions from the typed cards."""
    client = create_app(test_settings({"CDS_AS_OF": "2025-06-01"})).test_client()
    with caplog.at_level(logging.INFO):
        response = client.post(
            "/cds-services/osteoporosis-escalation", json=hook_request("s12", with_prefetch=True)
        )
    assert response.status_code == 200
    (logged,) = [r.decision for r in caplog.records if hasattr(r, "decision")]  # type: ignore[attr-defined]
    assert logged["card_kinds"] == ["ESCALATE"]
    assert logged["suggestions"] == len(response.get_json()["cards"][0]["suggestions"]) == 3
