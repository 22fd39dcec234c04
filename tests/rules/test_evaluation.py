"""rules/evaluation.py: the shared state of one evaluation — scope for the INSUFFICIENT_DATA card (§1),
the recent-denosumab caution input (§6), the independent warnings (§1) and the follow-on list (§7)."""

from __future__ import annotations

import pytest

from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.agents import rank_agents
from cds_service.rules.evaluation import Evaluation
from tests.clinical_builders import AS_OF, STANDARD_LABS, administration, base_record, dxa, finding, statement

K = packaged_knowledge()


def evaluation_of(**changes: object) -> Evaluation:
    return Evaluation(base_record(**changes), K, AS_OF)


@pytest.mark.protocol("R0b", "3a-blocking")
@pytest.mark.parametrize(
    ("changes", "in_scope"),
    [
        pytest.param({}, True, id="§1: an osteoporosis drug -> in scope"),
        pytest.param(
            {"medications": (), "bmd": (), "findings": (finding({"osteoporosis"}, "2020-01-01"),)},
            True,
            id="§1: an osteoporosis diagnosis -> in scope",
        ),
        pytest.param(
            {"medications": (), "bmd": tuple(dxa("2024-05-20", th="-2.5"))},
            True,
            id="§1 edge: a T-score of exactly -2.5 -> in scope",
        ),
        pytest.param(
            {"medications": (), "bmd": tuple(dxa("2024-05-20", th="-2.4"))},
            False,
            id="§1 edge: T-score -2.4, no drug, no diagnosis -> out of scope (no card)",
        ),
    ],
)
def test_in_scope(changes: dict[str, object], in_scope: bool) -> None:
    assert evaluation_of(**changes).in_scope is in_scope


@pytest.mark.protocol("6-agents")
@pytest.mark.parametrize(
    ("medications", "recent"),
    [
        pytest.param(
            (administration("denosumab", "2023-12-01", 183),),
            True,
            id="§6 edge: denosumab injected exactly 18 months ago -> PTH caution",
        ),
        pytest.param(
            (administration("denosumab", "2023-11-30", 183),),
            False,
            id="§6 edge: injected 18 months and a day ago -> no caution",
        ),
        pytest.param(
            (statement("denosumab", "2022-01-01", "2023-12-01"),),
            True,
            id="§6 edge: statement-only denosumab ending 18 months ago -> caution",
        ),
        pytest.param(
            (statement("denosumab", "2022-01-01", "2023-11-30"),),
            False,
            id="§6 edge: statement-only denosumab ending before the 18-month window -> no caution",
        ),
    ],
)
def test_denosumab_within_caution_window(medications: tuple[MedicationRecord, ...], recent: bool) -> None:
    assert evaluation_of(medications=medications).agent_context().denosumab_within_caution_window is recent


@pytest.mark.protocol("W-ANABOLIC_FOLLOW_ON_MISSING", "W-DENOSUMAB_OVERDUE")
def test_compute_warnings_adds_warnings_and_caveats_once() -> None:
    evaluation = evaluation_of(
        medications=(
            statement("teriparatide", "2023-01-01", "2024-12-31", role="anabolic", interval_days=1),
            administration("denosumab", "2020-01-01", 183),
        )
    )
    evaluation.compute_warnings()
    assert [w.code for w in evaluation.warnings] == ["ANABOLIC_FOLLOW_ON_MISSING"]
    caveat = "last denosumab injection 2020-01-01 more than 24 months ago"
    assert caveat in evaluation.caveats
    evaluation.caveat(caveat)
    assert evaluation.caveats.count(caveat) == 1


@pytest.mark.protocol("7-plan", "3a-cap")
@pytest.mark.parametrize(
    ("labs", "with_agents", "options", "egfr_missing"),
    [
        pytest.param(
            STANDARD_LABS, False, [], False, id="§7: no agents listed -> no follow-on, nothing missing"
        ),
        pytest.param(
            STANDARD_LABS,
            True,
            ["alendronate", "zoledronic_acid", "denosumab"],
            False,
            id="§7: eGFR 75 (>= 35) -> alendronate, zoledronic acid 5 mg or denosumab",
        ),
        pytest.param(
            tuple(x for x in STANDARD_LABS if x.kind != "egfr"),
            True,
            [],
            True,
            id="§7/§3a: no eGFR -> follow-on empty and egfr missing (caps)",
        ),
    ],
)
def test_follow_on_for(
    labs: tuple[object, ...], with_agents: bool, options: list[str], egfr_missing: bool
) -> None:
    evaluation = evaluation_of(labs=labs)
    agents = rank_agents(evaluation.agent_context(), K) if with_agents else ()
    follow = evaluation.follow_on_for(agents)
    assert [f.agent for f in follow if f.status == "option"] == options
    assert ("egfr" in evaluation.missing) is egfr_missing
