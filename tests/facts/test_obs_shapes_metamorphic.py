"""Metamorphic: every shared scenario re-encoded in a real-world observation shape gives the same
decision object as the plain shape (protocol §3c: DXA panels, duplicates, lab values as strings)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from cds_service.offline import evaluate_bundle
from tests.support.app_settings import test_settings
from tests.support.fixtures import load_scenario_bundle, load_scenario_index
from tests.support.real_world_shapes import (
    as_dxa_panels,
    is_dxa_value,
    labs_as_strings,
    with_transcribed_copies,
)

SCENARIOS = load_scenario_index()
SETTINGS = test_settings({"CDS_AS_OF": "2025-06-01"})
Shape = Callable[[dict[str, Any]], dict[str, Any]]
SHAPES: dict[str, Shape] = {
    "dxa_panels": as_dxa_panels,
    "transcribed_copies": with_transcribed_copies,
    "transcribed_copies_named_by_model": lambda b: with_transcribed_copies(
        b, "Transcribed from report: Hologic Horizon"
    ),
    "labs_as_strings": labs_as_strings,
    "all": lambda b: labs_as_strings(as_dxa_panels(with_transcribed_copies(b))),
}


def _decide(bundle: dict[str, Any], as_of: str) -> dict[str, Any]:
    return evaluate_bundle(bundle, date.fromisoformat(as_of), SETTINGS)


@pytest.mark.protocol("3c-panels", "3c-duplicates", "3c-comparators", "5-dxa")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["id"] for s in SCENARIOS])
def test_real_world_shape_gives_the_same_decision(scenario: dict[str, Any], shape: str) -> None:
    plain = load_scenario_bundle(scenario["id"])
    reshaped = SHAPES[shape](plain)
    assert _decide(reshaped, scenario["as_of"]) == _decide(plain, scenario["as_of"])


@pytest.mark.protocol("3c-panels")
def test_panels_leave_no_plain_dxa_value() -> None:
    """The panel shape really moves every DXA value into components (the test above is not vacuous)."""
    reshaped = as_dxa_panels(load_scenario_bundle("s01"))
    observations = [
        e["resource"] for e in reshaped["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    assert not any(is_dxa_value(o) for o in observations)
    panels = [o for o in observations if "component" in o]
    assert len(panels) == 2 and all("effectivePeriod" in p for p in panels)
    assert all(c["valueQuantity"]["unit"] == "SD" for p in panels for c in p["component"])
