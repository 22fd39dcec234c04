"""rules/exposure.py beyond one record's coverage (see test_exposure_coverage.py): the per-agent priority
of administrations/dispenses, romosozumab doses, anabolic courses, therapy start and prior denosumab
(protocol §3b, §4). Records are built directly; no FHIR."""

from __future__ import annotations

from datetime import date

import pytest

from cds_service.facts.dates import Interval
from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.exposure import (
    agent_exposures,
    anabolic_courses,
    first_line_record_coverage,
    first_line_union,
    prior_denosumab_days,
    romosozumab_doses,
    therapy_start,
)
from tests.clinical_builders import AS_OF, administration, d, dispense, statement

K = packaged_knowledge()


def interval(start: str, end: str) -> Interval:
    return Interval(d(start), d(end))


def romosozumab_dose(day: str) -> MedicationRecord:
    return administration("romosozumab", day, 0, role="anabolic", interval_months=1)


def monthly(first_year: int, first_month: int, count: int, day: int = 10) -> list[str]:
    out = []
    for index in range(count):
        month = first_month - 1 + index
        out.append(date(first_year + month // 12, month % 12 + 1, day).isoformat())
    return out


# ----- priority per ingredient (§4) ------------------------------------------------------------------
@pytest.mark.protocol("4-coverage")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param(
            (statement("alendronate", "2023-01-01", "2024-12-31"), dispense("alendronate", "2024-01-01", 28)),
            [("2023-01-01", "2024-01-28")],
            id="§4: a statement only adds coverage before the first dispense",
        ),
        pytest.param(
            (statement("alendronate", "2024-06-01", "2024-12-31"), dispense("alendronate", "2024-01-01", 28)),
            [("2024-01-01", "2024-01-28")],
            id="§4: a statement after the first dispense adds nothing",
        ),
        pytest.param(
            (
                MedicationRecord("alendronate", "first_line", "administration", "completed", "ma-undated"),
                dispense("alendronate", "2024-01-01", 28),
            ),
            [("2024-01-01", "2024-01-28")],
            id="§4: an undated administration covers nothing",
        ),
    ],
)
def test_priority_of_verified_sources(
    medications: tuple[MedicationRecord, ...], expected: list[tuple[str, str]]
) -> None:
    exposure = agent_exposures(medications, AS_OF, K)["alendronate"]
    assert list(exposure.intervals) == [interval(a, b) for a, b in expected]
    assert exposure.verified


@pytest.mark.protocol("4-coverage")
def test_record_coverage_list_skips_undated_records() -> None:
    """§1 warnings' "coverage since": each dated first-line record on its own; undated ones add nothing."""
    medications = (
        statement("alendronate", "2023-01-01", "2023-06-30"),
        MedicationRecord("risedronate", "first_line", "administration", "completed", "ma-undated"),
        statement("teriparatide", "2024-01-01", role="anabolic"),
    )
    assert first_line_record_coverage(medications, AS_OF, K) == [
        ("alendronate", interval("2023-01-01", "2023-06-30"))
    ]


# ----- romosozumab doses (§4) ------------------------------------------------------------------------
@pytest.mark.protocol("4-anabolic-course")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param(
            tuple(romosozumab_dose(day) for day in ("2024-01-10", "2024-02-10", "2024-02-10", "2024-03-10")),
            3,
            id="§4/§3c: distinct administration dates (two syringes one day = one dose)",
        ),
        pytest.param(
            (statement("romosozumab", "2024-01-15", "2024-07-14", role="anabolic"),),
            6,
            id="§4: no administrations -> whole calendar months covered (6)",
        ),
        pytest.param(
            (statement("romosozumab", "2024-01-15", "2024-07-13", role="anabolic"),),
            5,
            id="§4 edge: one day short of the 6th month -> 5",
        ),
    ],
)
def test_romosozumab_doses(medications: tuple[MedicationRecord, ...], expected: int) -> None:
    exposure = agent_exposures(medications, AS_OF, K)["romosozumab"]
    assert romosozumab_doses(exposure, AS_OF) == expected


@pytest.mark.protocol("4-anabolic-course")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param(
            tuple(romosozumab_dose(day) for day in monthly(2023, 1, 12)),
            [("romosozumab", "2023-01-10", "2024-01-10", 12)],
            id="§4: romosozumab planned end = 12th dose + 1 month",
        ),
        pytest.param(
            tuple(romosozumab_dose(day) for day in monthly(2024, 1, 3)),
            [("romosozumab", "2024-01-10", "2025-01-10", 3)],
            id="§4: fewer than 12 doses -> start + 12 months",
        ),
        pytest.param(
            (romosozumab_dose("2025-06-02"),),
            [],
            id="§4: a course starting after as_of is not a course yet",
        ),
    ],
)
def test_romosozumab_courses(
    medications: tuple[MedicationRecord, ...], expected: list[tuple[str, str, str, int]]
) -> None:
    courses = anabolic_courses(agent_exposures(medications, AS_OF, K), AS_OF, K)
    assert [(c.agent, c.interval.start.isoformat(), c.planned_end.isoformat(), c.doses) for c in courses] == [
        (agent, start, end, doses) for agent, start, end, doses in expected
    ]


# ----- therapy start (§3b) ---------------------------------------------------------------------------
@pytest.mark.protocol("3b-therapy-start")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param((), None, id="§3b: no first-line coverage -> no therapy start"),
        pytest.param(
            (statement("alendronate", "2025-07-01"),),
            None,
            id="§3b: first-line coverage only after as_of -> no therapy start",
        ),
        pytest.param(
            (
                statement("alendronate", "2019-01-01"),
                statement("teriparatide", "2021-01-01", "2022-12-31", role="anabolic", interval_days=1),
            ),
            "2023-01-01",
            id="§3b: first-line continuing through an anabolic course restarts the day after it",
        ),
        pytest.param(
            (
                statement("alendronate", "2019-01-01", "2020-12-31"),
                statement("teriparatide", "2021-01-01", "2022-12-31", role="anabolic", interval_days=1),
                statement("denosumab", "2023-02-01"),
            ),
            "2023-02-01",
            id="§3b: first-line after an anabolic course -> a new episode",
        ),
        pytest.param(
            (
                statement("alendronate", "2019-01-01", "2020-12-31"),
                statement("teriparatide", "2021-01-01", "2024-12-31", role="anabolic", interval_days=1),
            ),
            "2019-01-01",
            id="§3b: no first-line after the course -> the earlier episode's start",
        ),
    ],
)
def test_therapy_start(medications: tuple[MedicationRecord, ...], expected: str | None) -> None:
    exposures = agent_exposures(medications, AS_OF, K)
    courses = anabolic_courses(exposures, AS_OF, K)
    start = therapy_start(first_line_union(exposures), courses, AS_OF, K)
    assert start == (d(expected) if expected else None)


# ----- prior denosumab (§3b) -------------------------------------------------------------------------
@pytest.mark.protocol("3b-prior-denosumab")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param((), 0, id="§3b: no denosumab -> 0"),
        pytest.param(
            (statement("denosumab", "2023-01-01", "2023-12-31"),),
            365,
            id="§3b: statement only (no injection dates) -> its covered span",
        ),
        pytest.param(
            (administration("denosumab", "2023-01-01", 183), administration("denosumab", "2023-07-01", 183)),
            181 + K.windows.denosumab_tail_days,
            id="§3b: last injection + tail - first injection",
        ),
    ],
)
def test_prior_denosumab_days(medications: tuple[MedicationRecord, ...], expected: int) -> None:
    exposure = agent_exposures(medications, AS_OF, K).get("denosumab")
    assert prior_denosumab_days(exposure, K) == expected
