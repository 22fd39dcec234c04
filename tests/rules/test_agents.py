"""rules/agents.py: exclusions, cautions, ranking and statuses of the anabolic agents (protocol §6), one
row per clinical situation, on an AgentContext built directly (no record, no decision table)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.agents import AgentContext, duration_text, findings_for, rank_agents
from cds_service.rules.history import CvStatus
from cds_service.rules.labs import assess_labs
from tests.clinical_builders import AS_OF, STANDARD_LABS, finding
from tests.knowledge_variants import variant

K = packaged_knowledge()
NO_CV = CvStatus((), (), (), ())
OLD_MI = finding({"myocardial_infarction"}, "2020-03-01", "myocardial infarction")
RADIATION = finding({"skeletal_radiation"}, "2019-01-01", "spine radiotherapy", resource_type="Procedure")


def context(**changes: object) -> AgentContext:
    ctx = AgentContext(
        sex="female",
        cv_status=NO_CV,
        labs=assess_labs(STANDARD_LABS, AS_OF, K),
        romosozumab_doses=0,
        pth_use_days=0,
    )
    return replace(ctx, **changes)  # type: ignore[arg-type]


def romosozumab_excluded_low_calcium() -> AgentContext:
    return context(labs=replace(assess_labs(STANDARD_LABS, AS_OF, K), calcium_low=True))


# ----- exclusions and cautions (§6 table) ----------------------------------------------------------
@pytest.mark.protocol("6-agents")
@pytest.mark.parametrize(
    ("agent", "ctx", "knowledge", "excluded", "caution"),
    [
        pytest.param(
            "romosozumab",
            context(cv_status=CvStatus((), (OLD_MI,), (), ())),
            K,
            [],
            ["prior MI or stroke: myocardial infarction (2020-03-01)"],
            id="§6: prior MI outside 12 months -> caution (default policy)",
        ),
        pytest.param(
            "romosozumab",
            context(cv_status=CvStatus((), (OLD_MI,), (), ())),
            variant("policy.romosozumab_prior_cv_event", "exclude"),
            ["prior MI or stroke: myocardial infarction (2020-03-01)"],
            [],
            id="§6 config: prior MI at any time excludes under romosozumab_prior_cv_event: exclude (EU)",
        ),
        pytest.param(
            "romosozumab",
            context(romosozumab_doses=12),
            K,
            ["12 romosozumab doses already (limit 12)"],
            [],
            id="§6 edge: 12 romosozumab doses ever -> excluded",
        ),
        pytest.param(
            "romosozumab", context(romosozumab_doses=11), K, [], [], id="§6 edge: 11 doses -> not excluded"
        ),
        pytest.param(
            "romosozumab",
            romosozumab_excluded_low_calcium(),
            K,
            ["corrected calcium below range"],
            [],
            id="§6/R9c: corrected calcium below range -> romosozumab excluded",
        ),
        pytest.param(
            "teriparatide",
            context(skeletal_radiation=(RADIATION,)),
            K,
            ["skeletal radiation: spine radiotherapy (2019-01-01)"],
            [],
            id="§6: skeletal radiation -> PTH analogue excluded",
        ),
        pytest.param(
            "teriparatide",
            context(alp_unexplained=True),
            K,
            ["unexplained raised alkaline phosphatase: work-up pending"],
            [],
            id="§6/R9b: unexplained raised ALP -> PTH analogue excluded pending work-up",
        ),
        pytest.param(
            "abaloparatide",
            context(labs=replace(assess_labs(STANDARD_LABS, AS_OF, K), calcium_high=True)),
            K,
            ["hypercalcaemia (corrected calcium above range)"],
            [],
            id="§6/R3: corrected calcium above range -> PTH analogue excluded (e.g. during a course)",
        ),
        pytest.param(
            "abaloparatide",
            context(primary_hpt_active=True),
            K,
            ["active primary hyperparathyroidism"],
            [],
            id="§6: active primary hyperparathyroidism -> PTH analogue excluded",
        ),
        pytest.param(
            "teriparatide",
            context(pth_use_days=730),
            K,
            ["730 days of PTH-analogue use already (limit 730)"],
            [],
            id="§6 edge: 730 days of PTH-analogue use -> excluded",
        ),
        pytest.param(
            "teriparatide", context(pth_use_days=729), K, [], [], id="§6 edge: 729 days -> not excluded"
        ),
        pytest.param(
            "abaloparatide", context(sex="male"), K, [], [], id="§6: abaloparatide in men allowed (US label)"
        ),
        pytest.param(
            "abaloparatide",
            context(sex="male"),
            variant("policy.abaloparatide_in_men", "exclude"),
            ["male: abaloparatide not licensed for men under this policy"],
            [],
            id="§6 config: abaloparatide_in_men: exclude (EU label)",
        ),
    ],
)
def test_findings_for(
    agent: str, ctx: AgentContext, knowledge: Knowledge, excluded: list[str], caution: list[str]
) -> None:
    assert findings_for(agent, ctx, knowledge) == (excluded, caution)


@pytest.mark.protocol("R3", "6-agents")
def test_usage_limits_do_not_count_during_the_running_course() -> None:
    """R3: "a clinical §6 exclusion now applies to that agent (not the usage limits)"."""
    assert findings_for("romosozumab", context(romosozumab_doses=12), K, usage_limits=False) == ([], [])
    assert findings_for("teriparatide", context(pth_use_days=800), K, usage_limits=False) == ([], [])


# ----- ranking and status (§6 ranking 1-4) -----------------------------------------------------------
@pytest.mark.protocol("6-agents", "3b-sex")
@pytest.mark.parametrize(
    ("ctx", "expected"),
    [
        pytest.param(
            context(),
            [("romosozumab", "preferred", 1), ("abaloparatide", "option", 2), ("teriparatide", "option", 3)],
            id="§6.2: women -> romosozumab, abaloparatide, teriparatide",
        ),
        pytest.param(
            context(sex="male", cv_status=NO_CV),
            [
                ("teriparatide", "preferred", 1),
                ("abaloparatide", "option", 2),
                ("romosozumab", "excluded", None),
            ],
            id="§6.2: men -> teriparatide, abaloparatide; romosozumab excluded (off-label in men)",
        ),
        pytest.param(
            context(sex="unknown"),
            [("teriparatide", "preferred", 1), ("abaloparatide", "option", 2), ("romosozumab", "caution", 3)],
            id="§3b: sex unknown ranks as men, romosozumab with a caution",
        ),
        pytest.param(
            context(sex="unknown", prior_denosumab_12_months=True),
            [("teriparatide", "preferred", 1), ("abaloparatide", "option", 2), ("romosozumab", "caution", 3)],
            id="§6.3: a caution ranks below, even after rule 1 picked romosozumab first",
        ),
        pytest.param(
            context(
                hip_failing=True, bisphosphonate_before_followup=True, denosumab_within_caution_window=True
            ),
            [
                ("romosozumab", "preferred", 1),
                ("abaloparatide", "caution", 2),
                ("teriparatide", "caution", 3),
            ],
            id="§6.1: hip failing after a bisphosphonate -> romosozumab; recent denosumab cautions PTH",
        ),
        pytest.param(
            romosozumab_excluded_low_calcium(),
            [
                ("abaloparatide", "preferred", 1),
                ("teriparatide", "option", 2),
                ("romosozumab", "excluded", None),
            ],
            id="§6.2: the rule's agent excluded -> the rest in the usual order",
        ),
    ],
)
def test_rank_agents(ctx: AgentContext, expected: list[tuple[str, str, int | None]]) -> None:
    assert [(a.agent, a.status, a.rank) for a in rank_agents(ctx, K)] == expected


@pytest.mark.protocol("6-agents", "3b-prior-denosumab")
def test_rule_one_reason_is_given_on_romosozumab() -> None:
    ranked = rank_agents(context(sex="male", prior_denosumab_12_months=True), K)
    assert [(a.agent, a.status) for a in ranked][-1] == ("romosozumab", "excluded")
    women = rank_agents(context(prior_denosumab_12_months=True), K)
    assert women[0].agent == "romosozumab"
    assert women[0].reasons == ("prior denosumab for 12 months or more",)


# ----- configured spans as the card says them --------------------------------------------------------
@pytest.mark.parametrize(
    ("days", "text"),
    [
        pytest.param(365, "12 months", id="365 days -> 12 months"),
        pytest.param(548, "18 months", id="548 days (EU abaloparatide) -> 18 months"),
        pytest.param(730, "24 months", id="730 days -> 24 months"),
        pytest.param(300, "300 days", id="300 days is no whole month count -> days"),
        pytest.param(10, "10 days", id="under half a month -> days"),
    ],
)
def test_duration_text(days: int, text: str) -> None:
    assert duration_text(days) == text
