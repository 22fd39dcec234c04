"""rules/plan.py: the phase plan and the "before starting" list of protocol §7, one row per situation."""

from __future__ import annotations

import pytest

from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.plan import before_starting, phase_plan, plan_start
from tests.clinical_builders import d

K = packaged_knowledge()
FOLLOW_ON = "Then an anti-resorptive from the day the anabolic ends, with no gap."


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("agent", "current", "last_denosumab", "pth_days", "expected"),
    [
        pytest.param(None, "alendronate", None, 0, [], id="§7: no anabolic ranked -> no plan"),
        pytest.param(
            "romosozumab",
            "denosumab",
            "2025-01-10",
            0,
            [
                "Start Romosozumab when the next denosumab dose is due (2025-07-12; "
                "no later than 2025-08-10).",
                "Romosozumab 12 monthly doses.",
                FOLLOW_ON,
            ],
            id="§7: on denosumab -> start when the next dose is due (+183 days), at most 7 months after",
        ),
        pytest.param(
            "teriparatide",
            "denosumab",
            "2025-01-10",
            100,
            [
                "Start Teriparatide when the next denosumab dose is due (2025-07-12; "
                "no later than 2025-08-10).",
                "A PTH analogue after denosumab needs a specialist-planned overlap.",
                "Teriparatide up to 24 months minus prior PTH-analogue use (100 days used, 630 remain).",
                FOLLOW_ON,
            ],
            id="§7: PTH analogue after denosumab -> specialist-planned overlap; 730 - prior use",
        ),
        pytest.param(
            "abaloparatide",
            "alendronate",
            None,
            800,
            [
                "Stop the oral bisphosphonate the day Abaloparatide starts.",
                "Abaloparatide up to 24 months minus prior PTH-analogue use (800 days used, 0 remain).",
                FOLLOW_ON,
            ],
            id="§7: on an oral bisphosphonate -> stop it the day the anabolic starts; never negative",
        ),
        pytest.param(
            "romosozumab",
            "zoledronic_acid",
            None,
            0,
            ["Romosozumab 12 monthly doses.", FOLLOW_ON],
            id="§7: after IV zoledronic acid -> no transition step",
        ),
    ],
)
def test_phase_plan(
    agent: str | None, current: str | None, last_denosumab: str | None, pth_days: int, expected: list[str]
) -> None:
    plan = phase_plan(agent, current, d(last_denosumab) if last_denosumab else None, pth_days, K)
    names = {a: K.model.agents[a].display for a in ("romosozumab", "teriparatide", "abaloparatide")}
    rendered = [line.replace(names[agent], agent.capitalize()) if agent else line for line in plan]
    assert rendered == expected


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("sex", "agent", "pth_line", "testosterone"),
    [
        pytest.param("female", "romosozumab", False, False, id="§7: woman, romosozumab"),
        pytest.param("female", "teriparatide", True, False, id="§7: PTH before a PTH analogue"),
        pytest.param("male", "abaloparatide", True, True, id="§7: testosterone in men"),
        pytest.param("unknown", "romosozumab", False, True, id="§7/§3b: sex unknown handled as men"),
    ],
)
def test_before_starting(sex: str, agent: str, pth_line: bool, testosterone: bool) -> None:
    lines = before_starting(sex, agent, K)  # type: ignore[arg-type]
    assert lines[0] == "Albumin-corrected calcium, 25-OH vitamin D, ALP, eGFR."
    assert ("PTH before starting a PTH analogue." in lines) is pth_line
    assert ("testosterone" in lines[-1]) is testosterone


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        pytest.param(
            "2025-07-11",
            "Start Romosozumab when the next denosumab dose is due (2025-07-12; no later than 2025-08-10).",
            id="§7: next denosumab dose still ahead",
        ),
        pytest.param(
            "2025-07-12",
            "The next denosumab dose was due 2025-07-12: start Romosozumab now, no later than 2025-08-10.",
            id="§7 edge: the due date is today -> start now",
        ),
        pytest.param(
            "2025-08-10",
            "The next denosumab dose was due 2025-07-12: start Romosozumab now, no later than 2025-08-10.",
            id="§7 edge: the 7-month latest date is today -> still within it",
        ),
        pytest.param(
            "2025-08-11",
            "The next denosumab dose was due 2025-07-12 and the latest switch date "
            "2025-08-10 has passed: start Romosozumab now.",
            id="§7: beyond 7 months after the last injection -> late",
        ),
    ],
)
def test_denosumab_transition_relative_to_as_of(as_of: str, expected: str) -> None:
    plan = phase_plan("romosozumab", "denosumab", d("2025-01-10"), 0, K, as_of=d(as_of))
    name = K.model.agents["romosozumab"].display
    assert plan[0].replace(name, "Romosozumab") == expected


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("agent", "current", "as_of", "expected"),
    [
        pytest.param(
            "romosozumab", "denosumab", "2025-07-11", "2025-07-12", id="§7: next dose ahead -> its date"
        ),
        pytest.param("teriparatide", "denosumab", "2025-07-11", "2025-07-12", id="§7: a PTH analogue too"),
        pytest.param("romosozumab", "denosumab", "2025-07-12", None, id="§7 edge: due today -> start now"),
        pytest.param("romosozumab", "alendronate", "2025-07-11", None, id="§7: oral -> no date in the plan"),
        pytest.param(None, "denosumab", "2025-07-11", None, id="§7: no anabolic ranked -> no plan"),
    ],
)
def test_plan_start_is_the_date_the_plan_states(
    agent: str | None, current: str, as_of: str, expected: str | None
) -> None:
    start = plan_start(agent, current, d("2025-01-10"), K, d(as_of))
    assert start == (d(expected) if expected else None)
    if start is not None:  # the plan's transition sentence gives that date
        (first, *_rest) = phase_plan(agent, current, d("2025-01-10"), 0, K, as_of=d(as_of))
        assert f"is due ({start.isoformat()};" in first
