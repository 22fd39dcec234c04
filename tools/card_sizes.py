#!/usr/bin/env python3
"""Card size distribution over every committed scenario (fhir_fixtures/scenarios).

Usage::

    .venv/bin/python tools/card_sizes.py [--json]

Each scenario's transaction Bundle is evaluated on its own `as_of` and rendered as the service would
(selectionBehavior `at-most-one`, no pinned line). Printed per card kind (outcome or warning code): the
number of cards and the min / median / max of the markdown `detail` and of the whole card JSON (without
the decision extension, which is machine data), in bytes (UTF-8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from cds_service.config import Settings
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.cards import render_cards
from cds_service.wire.service import PatientViewService

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS_DIR = REPO_ROOT / "fhir_fixtures" / "scenarios"


def _wire(card: Any) -> dict[str, Any]:
    wire = card.to_wire() if hasattr(card, "to_wire") else card
    return dict(wire)


def _kind(card: dict[str, Any]) -> str:
    """The card's topic code (outcome or warning code without underscores)."""
    return str(card.get("source", {}).get("topic", {}).get("code", ""))


def measure() -> dict[str, list[tuple[str, int, int]]]:
    """Card kind -> [(scenario id, detail bytes, card bytes without the extension)]."""
    knowledge = load_knowledge(None)
    service = PatientViewService(
        Settings(), knowledge, new_uuid=lambda: "00000000-0000-4000-8000-000000000000"
    )
    index = json.loads((SCENARIOS_DIR / "index.json").read_text(encoding="utf-8"))
    sizes: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for scenario in index:
        bundle = json.loads((SCENARIOS_DIR / f"{scenario['id']}.json").read_text(encoding="utf-8"))
        resources = [entry["resource"] for entry in bundle.get("entry", [])]
        decision = service.decide(resources, scenario["id"], date.fromisoformat(scenario["as_of"]))
        cards = render_cards(
            decision,
            knowledge,
            patient_id=scenario["id"],
            selection_behavior="at-most-one",
            as_of_pinned=False,
            new_uuid=lambda: "00000000-0000-4000-8000-000000000000",
        )
        for card in cards:
            wire = _wire(card)
            wire.pop("extension", None)
            detail = len(str(wire.get("detail", "")).encode("utf-8"))
            sizes[_kind(wire)].append((scenario["id"], detail, len(orjson.dumps(wire))))
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw sizes as JSON")
    args = parser.parse_args()
    sizes = measure()
    if args.json:
        print(json.dumps(sizes, indent=1, sort_keys=True))
        return 0
    print(f"{'card kind':<26} {'n':>3}  {'detail min/median/max':>24}  {'card min/median/max':>22}")
    for kind in sorted(sizes):
        rows = sizes[kind]
        details = [d for _, d, _ in rows]
        whole = [c for _, _, c in rows]
        print(
            f"{kind:<26} {len(rows):>3}  "
            f"{min(details):>6} / {statistics.median(details):>6.0f} / {max(details):>6}  "
            f"{min(whole):>6} / {statistics.median(whole):>6.0f} / {max(whole):>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
