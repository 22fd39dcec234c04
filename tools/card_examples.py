#!/usr/bin/env python3
"""Rendered card examples of every outcome and warning for docs/cards.md (a test keeps them current).

Usage::

    .venv/bin/python tools/card_examples.py           # rewrite the generated part of docs/cards.md
    .venv/bin/python tools/card_examples.py --check   # exit 1 when docs/cards.md is stale

Each example is a committed scenario (fhir_fixtures/scenarios/) evaluated on its own `as_of` and rendered as
the service does; outcomes that have no card by default are shown with the policy that enables it, and the
overdue denosumab warning with scenario s55 alive (as the sandbox demo does).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from cds_service.config import Settings
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.schema import PACKAGED_DIR
from cds_service.present.card_model import Card
from cds_service.present.cards import render_cards
from cds_service.wire.service import PatientViewService

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS_DIR = REPO_ROOT / "fhir_fixtures" / "scenarios"
DOC = REPO_ROOT / "docs" / "cards.md"
BEGIN = "<!-- BEGIN GENERATED EXAMPLES (tools/card_examples.py) -->"
END = "<!-- END GENERATED EXAMPLES -->"
UUID = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Example:
    title: str
    scenario: str
    policy: tuple[str, ...] = ()  # policy flags switched on for this example
    alive: bool = False  # Patient.deceased[x] removed
    days_before_planned_end: int | None = None  # evaluate this many days before the running course ends


EXAMPLES = (
    Example("ESCALATE (preferred agent first)", "s01"),
    Example("ESCALATE after denosumab (caution agents)", "s12"),
    Example("CONSIDER (capped: BMD only, caveats)", "s23"),
    Example("CONSIDER at target (R11)", "s20"),
    Example("RESPONSE_MET (policy response_met_card)", "s02", policy=("response_met_card",)),
    Example("NOT_ELIGIBLE_DURATION (policy duration_card)", "s07", policy=("duration_card",)),
    Example("NOT_ELIGIBLE_ADHERENCE", "s09"),
    Example("VERY_HIGH_RISK_PATHWAY", "s31"),
    Example("SPECIALIST_REVIEW (renal gate)", "s39"),
    Example("SPECIALIST_REVIEW (scanner changed, R8)", "s25"),
    Example("INSUFFICIENT_DATA", "s19"),
    Example("ON_ANABOLIC (30 days before the planned end)", "s28", days_before_planned_end=30),
    Example("ANABOLIC_FOLLOW_ON_MISSING (with SPECIALIST_REVIEW R3c)", "s52"),
    Example("DENOSUMAB_OVERDUE (s55 alive)", "s55", alive=True),
)
NO_CARD = (
    "NOT_ELIGIBLE_NOT_HIGH_RISK (s22)",
    "NOT_ELIGIBLE_NO_FIRST_LINE (s43)",
    "NOT_APPLICABLE (s27, s55)",
)


def _knowledge(base: Knowledge, flags: tuple[str, ...]) -> Knowledge:
    if not flags:
        return base
    policy = base.model.policy.model_copy(update=dict.fromkeys(flags, True))
    return Knowledge(base.model.model_copy(update={"policy": policy}), "0" * 64, PACKAGED_DIR)


def _resources(example: Example) -> list[dict[str, Any]]:
    bundle = json.loads((SCENARIOS_DIR / f"{example.scenario}.json").read_text(encoding="utf-8"))
    resources: list[dict[str, Any]] = [entry["resource"] for entry in bundle["entry"]]
    if example.alive:
        for resource in resources:
            if resource["resourceType"] == "Patient":
                resource.pop("deceasedBoolean", None)
                resource.pop("deceasedDateTime", None)
    return resources


def render_example(example: Example, base: Knowledge, as_of: date) -> list[Card]:
    knowledge = _knowledge(base, example.policy)
    service = PatientViewService(Settings(), knowledge)
    resources = _resources(example)
    decision = service.decide(resources, example.scenario, as_of)
    if example.days_before_planned_end is not None and decision.planned_end is not None:
        later = decision.planned_end - timedelta(days=example.days_before_planned_end)
        decision = service.decide(resources, example.scenario, max(later, as_of))
    return render_cards(
        decision,
        knowledge,
        patient_id=example.scenario,
        selection_behavior="at-most-one",
        as_of_pinned=False,
        new_uuid=lambda: UUID,
    )


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}".rstrip() for line in text.splitlines())


def _card_markdown(card: Card) -> str:
    size = len(card.detail.encode("utf-8"))
    parts = [
        f"**`{card.indicator}`** — **{card.summary}** ({len(card.summary)} characters; detail {size} B)",
        "",
    ]
    parts.append(_quoted(card.detail))
    if card.suggestions:
        parts += ["", f"Buttons (`selectionBehavior` {card.selection_behavior}):", ""]
        parts += [f"- [{s.label}]" + (" — recommended" if s.is_recommended else "") for s in card.suggestions]
    if card.links:
        parts += ["", f"Links: the {len(card.links)} sources (`absolute`, listed above)."]
    return "\n".join(parts)


def generated(base: Knowledge | None = None) -> str:
    knowledge = base or load_knowledge(None)
    index = {s["id"]: s for s in json.loads((SCENARIOS_DIR / "index.json").read_text(encoding="utf-8"))}
    out = [BEGIN, "", "The first card of every response carries the sources as links:", ""]
    first = render_example(EXAMPLES[0], knowledge, date.fromisoformat(index[EXAMPLES[0].scenario]["as_of"]))
    out += [f"- [{link.label}]({link.url})" for link in first[0].links] + [""]
    for example in EXAMPLES:
        scenario = index[example.scenario]
        out += [f"### {example.title}", "", f"Scenario {example.scenario}: {scenario['title']}.", ""]
        for card in render_example(example, knowledge, date.fromisoformat(scenario["as_of"])):
            out += [_card_markdown(card), ""]
    out += ["### No card", "", "No card by default: " + "; ".join(NO_CARD) + ".", "", END]
    return "\n".join(out)


def updated_doc(current: str, section: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head + section + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/cards.md is stale")
    args = parser.parse_args()
    current = DOC.read_text(encoding="utf-8")
    wanted = updated_doc(current, generated())
    if args.check:
        if wanted != current:
            print("docs/cards.md is stale: run tools/card_examples.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
