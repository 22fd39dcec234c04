"""facts.plausible_dates: implausible dates are ignored with a caveat naming them (protocol §3c)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from cds_service.facts.patient_record import (
    BmdResult,
    ClinicalFinding,
    Demographics,
    FraxResult,
    LabResult,
    MedicationRecord,
    PatientRecord,
)
from cds_service.facts.plausible_dates import plausible_record

AS_OF = date(2024, 6, 1)
pytestmark = pytest.mark.protocol("3c-implausible")


def bmd_on(day: date) -> BmdResult:
    return BmdResult(day, "total_hip", "left", "t_score", Decimal("-2.6"), None, "o1")


def lab_on(day: date) -> LabResult:
    return LabResult("egfr", day, Decimal(62), "mL/min/1.73m2", None, None, "l1")


def finding(onset: date | None, recorded: date | None = None) -> ClinicalFinding:
    return ClinicalFinding(
        "Condition",
        "c1",
        frozenset({"vertebral_fracture"}),
        (),
        "Vertebral fracture",
        onset,
        recorded,
        "active",
    )


def medication(
    event: date | None = None, start: date | None = None, end: date | None = None
) -> MedicationRecord:
    return MedicationRecord(
        "denosumab",
        "first_line",
        "request",
        "active",
        "m1",
        event_date=event,
        period_start=start,
        period_end=end,
    )


PATIENT = Demographics(date(1950, 3, 1), "female", False)


@pytest.mark.parametrize(
    ("day", "kept"),
    [
        pytest.param(date(1900, 1, 1), True, id="first-plausible-day"),
        pytest.param(date(1899, 12, 31), False, id="before-1900"),
        pytest.param(date(1, 1, 1), False, id="sentinel-0001-01-01"),
        pytest.param(AS_OF, True, id="as-of"),
        pytest.param(date(2025, 6, 1), True, id="as-of-plus-one-year"),
        pytest.param(date(2025, 6, 2), False, id="after-as-of-plus-one-year"),
        pytest.param(date(9999, 12, 31), False, id="sentinel-9999-12-31"),
    ],
)
def test_measurement_dates(day: date, kept: bool) -> None:
    record = PatientRecord(
        PATIENT, bmd=(bmd_on(day),), labs=(lab_on(day),), frax=(FraxResult(day, "mof", Decimal(22)),)
    )
    result = plausible_record(record, AS_OF)
    assert (len(result.bmd), len(result.labs), len(result.frax)) == ((1, 1, 1) if kept else (0, 0, 0))
    if kept:
        assert result == record
    else:
        shown = day.isoformat()
        assert result.caveats == (
            f"ignored T-score dated {shown}: implausible date",
            f"ignored FRAX mof dated {shown}: implausible date",
            f"ignored eGFR dated {shown}: implausible date",
        )


@pytest.mark.parametrize(
    ("record", "expected", "caveat"),
    [
        pytest.param(
            medication(event=date(1, 1, 1)),
            medication(),
            "ignored denosumab record dated 0001-01-01: implausible date",
            id="event-date-sentinel-left-undated",
        ),
        pytest.param(
            medication(start=date(2023, 1, 1), end=date(2024, 12, 31)),
            medication(start=date(2023, 1, 1), end=date(2024, 12, 31)),
            None,
            id="planned-end-within-a-year-kept",
        ),
        pytest.param(
            medication(start=date(1, 1, 1), end=date(9999, 12, 31)),
            medication(end=AS_OF),
            "ignored denosumab record dated 0001-01-01: implausible date",
            id="both-sentinels",
        ),
        pytest.param(
            medication(start=date(1850, 1, 1), end=date(1850, 2, 1)),
            medication(),
            "ignored denosumab record dated 1850-01-01: implausible date",
            id="period-before-1900",
        ),
    ],
)
def test_medication_dates(record: MedicationRecord, expected: MedicationRecord, caveat: str | None) -> None:
    result = plausible_record(PatientRecord(PATIENT, medications=(record,)), AS_OF)
    assert result.medications == (expected,)
    if caveat is None:
        assert result.caveats == ()
    else:
        assert caveat in result.caveats


def test_open_end_is_read_as_running_on_as_of_when_another_date_is_implausible() -> None:
    """With some other implausible date in the record, a sentinel end is rewritten as documented."""
    record = PatientRecord(
        PATIENT,
        medications=(medication(start=date(2023, 1, 1), end=date(9999, 12, 31)),),
        labs=(lab_on(date(1, 1, 1)),),
    )
    assert plausible_record(record, AS_OF).medications == (medication(start=date(2023, 1, 1), end=AS_OF),)


# A sentinel Period end is open (protocol §3c) whatever else the record holds: the same medication gives
# the same facts, with or without an unrelated implausible date beside it (regression: the rewrite used to
# happen only when some other date drew a caveat).
@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            medication(start=date(2023, 1, 1), end=date(9999, 12, 31)),
            medication(start=date(2023, 1, 1), end=AS_OF),
            id="open-end-sentinel-runs-to-as-of",
        ),
        pytest.param(
            medication(start=date(2025, 3, 1), end=date(9999, 12, 31)),
            medication(start=date(2025, 3, 1), end=date(2025, 3, 1)),
            id="open-end-never-before-its-start",
        ),
    ],
)
def test_open_end_alone_is_read_as_running_on_as_of(
    record: MedicationRecord, expected: MedicationRecord
) -> None:
    result = plausible_record(PatientRecord(PATIENT, medications=(record,)), AS_OF)
    assert result.medications == (expected,)
    assert result.caveats == ()


@pytest.mark.parametrize(
    ("onset", "recorded", "expected_onset", "expected_recorded", "caveats"),
    [
        pytest.param(
            date(2020, 1, 1), date(2020, 2, 1), date(2020, 1, 1), date(2020, 2, 1), 0, id="plausible"
        ),
        pytest.param(date(1800, 1, 1), date(2020, 2, 1), None, date(2020, 2, 1), 1, id="onset-typo-undated"),
        pytest.param(date(2020, 1, 1), date(9999, 12, 31), date(2020, 1, 1), None, 1, id="recorded-sentinel"),
        pytest.param(None, None, None, None, 0, id="undated"),
    ],
)
def test_finding_dates_leave_the_finding_in_place(
    onset: date | None,
    recorded: date | None,
    expected_onset: date | None,
    expected_recorded: date | None,
    caveats: int,
) -> None:
    result = plausible_record(PatientRecord(PATIENT, findings=(finding(onset, recorded),)), AS_OF)
    assert result.findings == (finding(expected_onset, expected_recorded),)
    assert len(result.caveats) == caveats


@pytest.mark.parametrize(
    ("birth", "kept"),
    [
        pytest.param(date(1950, 3, 1), True, id="plausible"),
        pytest.param(AS_OF, True, id="born-on-as-of"),
        pytest.param(date(2024, 6, 2), False, id="born-after-as-of"),
        pytest.param(date(1, 1, 1), False, id="sentinel"),
    ],
)
def test_birth_date(birth: date, kept: bool) -> None:
    record = PatientRecord(replace(PATIENT, birth_date=birth))
    result = plausible_record(record, AS_OF)
    assert result.demographics is not None
    assert result.demographics.birth_date == (birth if kept else None)
    assert (result.caveats == ()) is kept


def test_dxa_reports_and_repeated_caveats() -> None:
    record = PatientRecord(
        None,
        dxa_reports_without_values=(date(2023, 1, 1), date(9999, 12, 31)),
        labs=(lab_on(date(1, 1, 1)), lab_on(date(1, 1, 1))),
        caveats=("earlier caveat",),
    )
    result = plausible_record(record, AS_OF)
    assert result.dxa_reports_without_values == (date(2023, 1, 1),)
    assert result.labs == ()
    assert result.caveats == (
        "earlier caveat",
        "ignored eGFR dated 0001-01-01: implausible date",
        "ignored DXA report dated 9999-12-31: implausible date",
    )
