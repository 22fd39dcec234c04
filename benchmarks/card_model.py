#!/usr/bin/env python3
"""Cost of the typed cards: render (typed) -> to_wire -> JSON, against the same card as a pydantic model.

Usage::

    .venv/bin/python benchmarks/card_model.py [--repeat 2000]

In-process, no network. Uses the committed scenario s01 (ESCALATE, three suggestions, twelve links) and
prints microseconds per call (median of five runs). The pydantic rows validate the same wire dict with a
strict model mirroring `card_model.Card`, to show what a validating model would add per card.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from datetime import date
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from cds_service.config import Settings
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.cards import render_cards
from cds_service.wire.service import PatientViewService

SCENARIO = Path(__file__).resolve().parents[1] / "fhir_fixtures" / "scenarios" / "s01.json"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)


class PCoding(_Strict):
    system: str
    code: str
    display: str | None = None


class PSource(_Strict):
    label: str
    url: str | None = None
    topic: PCoding | None = None


class PLink(_Strict):
    label: str
    url: str
    type: Literal["absolute", "smart"]


class PAction(_Strict):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None


class PSuggestion(_Strict):
    label: str
    uuid: str
    isRecommended: bool | None = None  # noqa: N815 - wire name
    actions: list[PAction] = []


class PCard(_Strict):
    uuid: str
    summary: str
    indicator: Literal["info", "warning", "critical"]
    detail: str | None = None
    source: PSource
    suggestions: list[PSuggestion] = []
    selectionBehavior: str | None = None  # noqa: N815
    overrideReasons: list[PCoding] = []  # noqa: N815
    links: list[PLink] = []
    extension: dict[str, Any] = {}


def _median_us(fn: Any, repeat: int) -> float:
    runs = [timeit.timeit(fn, number=repeat) / repeat * 1e6 for _ in range(5)]
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    knowledge = load_knowledge(None)
    service = PatientViewService(Settings(), knowledge)
    bundle = json.loads(SCENARIO.read_text(encoding="utf-8"))
    decision = service.decide([e["resource"] for e in bundle["entry"]], "s01", date(2025, 6, 1))

    def render() -> list[Any]:
        return render_cards(
            decision,
            knowledge,
            patient_id="s01",
            selection_behavior="at-most-one",
            as_of_pinned=False,
            new_uuid=lambda: "00000000-0000-4000-8000-000000000000",
        )

    cards = render()
    wire = [card.to_wire() for card in cards]
    rows = {
        "render_cards (typed Card objects)": render,
        "Card.to_wire() for the response": lambda: [card.to_wire() for card in cards],
        "orjson.dumps of the wire dicts": lambda: orjson.dumps(wire),
        "pydantic: validate the wire dicts": lambda: [PCard.model_validate(w) for w in wire],
        "pydantic: validate + model_dump": lambda: [
            PCard.model_validate(w).model_dump(exclude_none=True) for w in wire
        ],
    }
    print(f"{'step (s01, ESCALATE: 1 card, 3 suggestions, 12 links)':<56} {'µs/call':>9}")
    for name, fn in rows.items():
        print(f"{name:<56} {_median_us(fn, args.repeat):>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
