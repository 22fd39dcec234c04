"""The shared scenarios as metamorphic inputs: the record, its as_of and its baseline decision."""

from __future__ import annotations

import random
from datetime import date
from functools import cache
from typing import Any

from tests.metamorphic.transforms import Record
from tests.support.fixtures import load_scenario_bundle, load_scenario_index

SCENARIOS: list[dict[str, Any]] = load_scenario_index()
SCENARIO_IDS: list[str] = [s["id"] for s in SCENARIOS]
AS_OF: dict[str, date] = {s["id"]: date.fromisoformat(s["as_of"]) for s in SCENARIOS}
EXPECTED_OUTCOME: dict[str, str] = {s["id"]: s["expect"]["outcome"] for s in SCENARIOS}


@cache
def _record(scenario_id: str) -> Record:
    return Record.of([entry["resource"] for entry in load_scenario_bundle(scenario_id)["entry"]])


def scenario_record(scenario_id: str) -> Record:
    """The scenario's transaction Bundle as a Record (transforms copy before changing anything)."""
    return _record(scenario_id)


def seeded(*parts: str) -> random.Random:
    """A fixed random source per (scenario, transform): every run applies the same variant."""
    return random.Random("/".join(parts))
