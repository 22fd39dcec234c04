"""A data category the EHR cannot provide is unknown, never "none" (protocol §3a; knowledge interpretations):
blocking where the protocol's blocking inputs depend on it, otherwise it caps ESCALATE at CONSIDER."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.facts.extract import extract_record
from cds_service.facts.parse import parse_resources
from cds_service.knowledge.loader import load_knowledge
from cds_service.rules.protocol import evaluate
from tests.support.fixtures import load_scenario_bundle

KNOWLEDGE = load_knowledge()
AS_OF = date(2025, 6, 1)


def _decide(
    scenario_id: str, unavailable: list[str], drop_types: frozenset[str] = frozenset()
) -> dict[str, Any]:
    resources = [
        entry["resource"]
        for entry in load_scenario_bundle(scenario_id)["entry"]
        if entry["resource"]["resourceType"] not in drop_types
    ]
    record = extract_record(parse_resources(resources, KNOWLEDGE, as_of=AS_OF), KNOWLEDGE, unavailable)
    decision: dict[str, Any] = evaluate(record, KNOWLEDGE, AS_OF).to_json()
    return decision


@pytest.mark.protocol("3a-cap")
@pytest.mark.parametrize("category", ["allergies", "conditions", "procedures", "labs", "medicationDispenses"])
def test_a_missing_category_caps_escalate_at_consider(category: str) -> None:
    assert _decide("s01", [])["outcome"] == "ESCALATE"
    decision = _decide("s01", [category])
    assert decision["outcome"] == "CONSIDER"
    assert "unavailable_data" in decision["missing"]
    assert any(
        "not available from this EHR (unknown, not absent)" in caveat for caveat in decision["caveats"]
    )


@pytest.mark.protocol("3a-blocking", "R6")
def test_no_first_line_found_with_a_medication_category_missing_is_insufficient_data() -> None:
    assert _decide("s43", [])["outcome"] == "NOT_ELIGIBLE_NO_FIRST_LINE"
    decision = _decide("s43", ["medicationStatements"])
    assert (decision["outcome"], decision["rule"]) == ("INSUFFICIENT_DATA", "R6")
    assert "medication_history" in decision["missing"]
    # A category that holds no medication keeps R6's own answer.
    assert _decide("s43", ["allergies"])["outcome"] == "NOT_ELIGIBLE_NO_FIRST_LINE"


@pytest.mark.protocol("3a-blocking", "R5")
def test_not_high_risk_cannot_be_said_without_the_dxa_results() -> None:
    assert _decide("s22", [])["outcome"] == "NOT_ELIGIBLE_NOT_HIGH_RISK"
    decision = _decide("s22", ["dxa"])
    assert (decision["outcome"], decision["rule"]) == ("INSUFFICIENT_DATA", "R5")
    assert "bmd_or_frax" in decision["missing"]


@pytest.mark.protocol("3a-blocking", "R0b")
def test_a_missing_patient_category_is_insufficient_data() -> None:
    decision = _decide("s01", ["patient"], frozenset({"Patient"}))
    assert (decision["outcome"], decision["rule"]) == ("INSUFFICIENT_DATA", "R0b")


@pytest.mark.parametrize("scenario_id", ["s27", "s31", "s39"])
def test_outcomes_the_present_facts_decide_do_not_change(scenario_id: str) -> None:
    plain = _decide(scenario_id, [])
    gap = _decide(scenario_id, ["allergies", "medicationStatements"])
    assert (gap["outcome"], gap["rule"]) == (plain["outcome"], plain["rule"])
