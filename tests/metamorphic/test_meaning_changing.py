"""Meaning-CHANGING transforms on every shared scenario: the decision must change as the protocol says."""

from __future__ import annotations

import pytest

from tests.metamorphic.paths import decide_offline
from tests.metamorphic.scenarios import AS_OF, SCENARIO_IDS, scenario_record
from tests.metamorphic.transforms import (
    add_recent_hip_fracture,
    add_recent_mi,
    drop_followup_dxa,
    is_dxa_value,
    mark_deceased,
)

# Rules decided before R4 (very high risk) and before R7f (follow-up DXA) in the ordered table (§3).
BEFORE_R4 = frozenset({"R0", "R0b", "R1", "R2", "R3", "R3c"})
BEFORE_R7F = BEFORE_R4 | frozenset({"R4", "R5", "R6", "R7"})


def _baseline(scenario_id: str) -> dict[str, object]:
    return decide_offline(scenario_record(scenario_id), AS_OF[scenario_id])


@pytest.mark.protocol("R0")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_deceased_patient_is_not_applicable(scenario_id: str) -> None:
    got = decide_offline(mark_deceased(scenario_record(scenario_id), AS_OF[scenario_id]), AS_OF[scenario_id])
    assert (got["outcome"], got["rule"], got["warnings"]) == ("NOT_APPLICABLE", "R0", []), (
        f"mark_deceased x {scenario_id}: expected NOT_APPLICABLE/R0 without warnings, got "
        f"{got['outcome']}/{got['rule']} warnings={got['warnings']}"
    )


@pytest.mark.protocol("R4", "3b-fractures")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_recent_fragility_hip_fracture_routes_to_very_high_risk(scenario_id: str) -> None:
    baseline = _baseline(scenario_id)
    got = decide_offline(
        add_recent_hip_fracture(scenario_record(scenario_id), AS_OF[scenario_id]), AS_OF[scenario_id]
    )
    if baseline["rule"] in BEFORE_R4:
        expected = (baseline["outcome"], baseline["rule"])
    else:
        expected = ("VERY_HIGH_RISK_PATHWAY", "R4")
    assert (got["outcome"], got["rule"]) == expected, (
        f"add_recent_hip_fracture x {scenario_id}: outcome/rule expected {expected}, "
        f"got {(got['outcome'], got['rule'])}"
    )


@pytest.mark.protocol("R7f", "3a-blocking", "5-dxa")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_dropping_the_followup_dxa_blocks(scenario_id: str) -> None:
    baseline = _baseline(scenario_id)
    record = scenario_record(scenario_id)
    dropped = drop_followup_dxa(record)
    got = decide_offline(dropped, AS_OF[scenario_id])
    if dropped == record:
        # a single scan date (s19: no baseline, the only scan is the follow-up): nothing to drop
        assert (got["outcome"], got["rule"]) == (baseline["outcome"], baseline["rule"])
        return
    if baseline["rule"] in BEFORE_R7F or not any(is_dxa_value(r) for r in record.resources):
        # decided before the follow-up DXA is looked at; R5 may lose its T-score only when no DXA at all
        assert got["rule"] in (baseline["rule"], "R5"), (
            f"drop_followup_dxa x {scenario_id}: rule {baseline['rule']} -> {got['rule']}"
        )
        return
    assert (got["outcome"], got["rule"]) == ("INSUFFICIENT_DATA", "R7f"), (
        f"drop_followup_dxa x {scenario_id}: expected INSUFFICIENT_DATA/R7f, "
        f"got {got['outcome']}/{got['rule']}"
    )
    assert "followup_dxa" in got["missing"], f"drop_followup_dxa x {scenario_id}: missing={got['missing']}"


@pytest.mark.protocol("6-agents", "R13")
@pytest.mark.parametrize("scenario_id", SCENARIO_IDS)
def test_recent_mi_excludes_romosozumab(scenario_id: str) -> None:
    baseline = _baseline(scenario_id)
    got = decide_offline(add_recent_mi(scenario_record(scenario_id), AS_OF[scenario_id]), AS_OF[scenario_id])
    if not baseline["agents"]:
        # no agent choice in this outcome; an MI during a running romosozumab course would be R3's business
        assert (got["outcome"], got["rule"]) == (baseline["outcome"], baseline["rule"]), (
            f"add_recent_mi x {scenario_id}: outcome/rule {baseline['outcome']}/{baseline['rule']} "
            f"-> {got['outcome']}/{got['rule']}"
        )
        return
    statuses = {a["agent"]: a["status"] for a in got["agents"]}
    assert statuses.get("romosozumab") == "excluded", f"add_recent_mi x {scenario_id}: agents={got['agents']}"
    assert got["outcome"] in (baseline["outcome"], "SPECIALIST_REVIEW"), (
        f"add_recent_mi x {scenario_id}: outcome {baseline['outcome']} -> {got['outcome']}"
    )
    assert got["outcome"] != "ESCALATE" or baseline["outcome"] == "ESCALATE"
