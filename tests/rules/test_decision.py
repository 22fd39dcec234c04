"""rules/decision.py: the decision object of protocol §9 as JSON (`rank` only on non-excluded agents;
`reevaluate_from` only with NOT_ELIGIBLE_DURATION)."""

from __future__ import annotations

import pytest

from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.decision import AgentAssessment
from cds_service.rules.protocol import evaluate
from tests.clinical_builders import AS_OF, base_record, statement

K = packaged_knowledge()


@pytest.mark.protocol("6-agents")
@pytest.mark.parametrize(
    ("assessment", "expected"),
    [
        pytest.param(
            AgentAssessment("romosozumab", "preferred", 1),
            {"agent": "romosozumab", "rank": 1, "status": "preferred", "reasons": []},
            id="§9: a ranked agent carries its rank",
        ),
        pytest.param(
            AgentAssessment("teriparatide", "excluded", None, ("Paget disease of bone",)),
            {"agent": "teriparatide", "status": "excluded", "reasons": ["Paget disease of bone"]},
            id="§9: an excluded agent has no rank",
        ),
    ],
)
def test_agent_json(assessment: AgentAssessment, expected: dict[str, object]) -> None:
    assert assessment.to_json() == expected


@pytest.mark.protocol("R7")
@pytest.mark.parametrize(
    ("start", "reevaluate_from"),
    [
        pytest.param("2023-05-31", "2026-02-28", id="§9/R7: NOT_ELIGIBLE_DURATION gives reevaluate_from"),
        pytest.param("2021-03-01", None, id="§9: other outcomes have no reevaluate_from"),
    ],
)
def test_reevaluate_from_in_json(start: str, reevaluate_from: str | None) -> None:
    decision = evaluate(base_record(medications=(statement("alendronate", start),)), K, AS_OF)
    assert decision.to_json().get("reevaluate_from") == reevaluate_from
