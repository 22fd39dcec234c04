"""The SMART app's view (present/smart_view.py): planned phases start when the card's phase plan says."""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.config import Settings
from cds_service.facts.dates import next_day
from cds_service.knowledge.loader import load_knowledge
from cds_service.present.smart_chart import timeline_chart
from cds_service.present.smart_view import PatientView, TreatmentRow, build_view
from cds_service.rules.decision import Decision
from cds_service.wire.service import PatientViewService
from tests.support.fixtures import load_scenario_bundle

KNOWLEDGE = load_knowledge()
SERVICE = PatientViewService(Settings(), KNOWLEDGE)


def view_of(scenario: str, as_of: date) -> tuple[Decision, PatientView]:
    resources = [entry["resource"] for entry in load_scenario_bundle(scenario)["entry"]]
    record, decision = SERVICE.assess(resources, scenario, as_of)
    return decision, build_view(record, decision, KNOWLEDGE)


def planned(view: PatientView) -> tuple[TreatmentRow, TreatmentRow]:
    anabolic, follow_on = (row for row in view.treatment if row.planned)
    return anabolic, follow_on


@pytest.mark.protocol("7-plan")
@pytest.mark.parametrize(
    ("scenario", "as_of", "start", "plan_says", "described"),
    [
        pytest.param(
            "s12",
            date(2025, 6, 1),
            date(2025, 7, 17),
            "when the next denosumab dose is due (2025-07-17;",
            "from 2025-07-17, when the next denosumab dose is due (the card's plan)",
            id="§7: on denosumab, next dose ahead -> the plan starts on its due date",
        ),
        pytest.param(
            "s12",
            date(2025, 7, 20),
            date(2025, 7, 20),
            "The next denosumab dose was due 2025-07-17: start",
            "from the evaluation date 2025-07-20 (the card's plan: start now)",
            id="§7: the due date has passed -> the card says start now -> as_of",
        ),
        pytest.param(
            "s01",
            date(2025, 6, 1),
            date(2025, 6, 1),
            "Stop the oral bisphosphonate the day",
            "from the evaluation date 2025-06-01 (the card's plan: start now)",
            id="§7: on an oral bisphosphonate -> no date in the plan -> as_of",
        ),
    ],
)
def test_planned_phases_start_when_the_card_says(
    scenario: str, as_of: date, start: date, plan_says: str, described: str
) -> None:
    decision, view = view_of(scenario, as_of)
    assert decision.outcome == "ESCALATE"
    assert any(plan_says in line for line in decision.evidence.plan)  # what the card's plan states
    anabolic, follow_on = planned(view)
    assert anabolic.covered[0].start == start
    assert follow_on.covered[0].start == next_day(anabolic.covered[0].end)  # no gap
    description = timeline_chart(view)
    assert description is not None
    assert f"{anabolic.label}: planned {start.isoformat()} to " in description
    assert described in description
