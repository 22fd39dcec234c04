"""rules/warnings.py: the independent warnings of protocol §1 (DENOSUMAB_OVERDUE and
ANABOLIC_FOLLOW_ON_MISSING) at their window edges. Exposures are built from medication records."""

from __future__ import annotations

import pytest

from cds_service.facts.patient_record import MedicationRecord
from cds_service.knowledge.loader import packaged_knowledge
from cds_service.rules.exposure import agent_exposures, anabolic_courses, first_line_record_coverage
from cds_service.rules.warnings import denosumab_overdue, follow_on_missing
from tests.clinical_builders import AS_OF, administration, statement

K = packaged_knowledge()
WINDOWS = K.windows


def overdue(*medications: MedicationRecord) -> tuple[str | None, str | None]:
    warning, caveat = denosumab_overdue(
        agent_exposures(medications, AS_OF, K).get("denosumab"),
        first_line_record_coverage(medications, AS_OF, K),
        AS_OF,
        K,
    )
    return (warning.code if warning else None), caveat


@pytest.mark.protocol("W-DENOSUMAB_OVERDUE")
@pytest.mark.parametrize(
    ("medications", "expected"),
    [
        pytest.param((), (None, None), id="§1: no denosumab -> no warning"),
        pytest.param(
            (statement("denosumab", "2023-01-01", "2023-12-31"),),
            (None, None),
            id="§1: denosumab without any injection date -> no warning",
        ),
        pytest.param(
            (administration("denosumab", "2024-10-31", 183),),
            (None, None),
            id="§1 edge: last injection exactly 213 days ago -> not overdue",
        ),
        pytest.param(
            (administration("denosumab", "2024-10-30", 183),),
            ("DENOSUMAB_OVERDUE", None),
            id="§1: last injection 214 days ago, nothing since -> DENOSUMAB_OVERDUE",
        ),
        pytest.param(
            (administration("denosumab", "2024-10-30", 183), statement("alendronate", "2025-05-01")),
            (None, None),
            id="§1: a bisphosphonate started after the last injection covers as_of -> no warning",
        ),
        pytest.param(
            (
                administration("denosumab", "2024-10-30", 183),
                MedicationRecord(
                    "denosumab",
                    "first_line",
                    "request",
                    "active",
                    "mr-den",
                    event_date=AS_OF.replace(month=5),
                    intent="order",
                ),
            ),
            ("DENOSUMAB_OVERDUE", None),
            id="§1: a later denosumab order is not coverage (the injection itself is missing)",
        ),
        pytest.param(
            (administration("denosumab", "2023-06-01", 183),),
            ("DENOSUMAB_OVERDUE", None),
            id="§1 edge: last injection exactly 24 months ago -> still a warning",
        ),
        pytest.param(
            (administration("denosumab", "2023-05-31", 183),),
            (None, "last denosumab injection 2023-05-31 more than 24 months ago"),
            id="§1: beyond 24 months -> a caveat line only, no warning code",
        ),
    ],
)
def test_denosumab_overdue(
    medications: tuple[MedicationRecord, ...], expected: tuple[str | None, str | None]
) -> None:
    assert overdue(*medications) == expected


def teriparatide(start: str, end: str | None) -> MedicationRecord:
    return statement("teriparatide", start, end, role="anabolic", interval_days=1)


@pytest.mark.protocol("W-ANABOLIC_FOLLOW_ON_MISSING")
@pytest.mark.parametrize(
    ("medications", "warned"),
    [
        pytest.param(
            (teriparatide("2023-01-01", "2024-12-31"),),
            True,
            id="§1: course ended 5 months ago, no anti-resorptive since -> warning",
        ),
        pytest.param(
            (teriparatide("2022-06-01", "2024-06-01"),),
            True,
            id="§1 edge: course ended exactly 12 months ago -> warning",
        ),
        pytest.param(
            (teriparatide("2022-06-01", "2024-05-31"),),
            False,
            id="§1 edge: course ended more than 12 months ago -> no warning",
        ),
        pytest.param(
            (teriparatide("2023-01-01", "2024-12-31"), statement("alendronate", "2025-01-01")),
            False,
            id="§1: an anti-resorptive covers past the course's end -> no warning",
        ),
        pytest.param(
            (teriparatide("2024-01-01", None),),
            False,
            id="§1: the course is still running -> no warning",
        ),
    ],
)
def test_follow_on_missing(medications: tuple[MedicationRecord, ...], warned: bool) -> None:
    exposures = agent_exposures(medications, AS_OF, K)
    warning = follow_on_missing(
        anabolic_courses(exposures, AS_OF, K),
        first_line_record_coverage(medications, AS_OF, K),
        AS_OF,
        K,
    )
    assert (warning.code if warning else None) == ("ANABOLIC_FOLLOW_ON_MISSING" if warned else None)
