"""facts.fhir_dates: the calendar date as written, and lenient fixes of quirky dateTimes (protocol §3b)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from cds_service.facts.fhir_dates import calendar_date, lenient_datetime, with_top_level_datetimes_fixed


@pytest.mark.protocol("3b-dates")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2021-02-15", date(2021, 2, 15), id="date"),
        pytest.param("2021-02-15T10:00:00Z", date(2021, 2, 15), id="utc-instant"),
        # Never converted to UTC: 23:30 at -05:00 is 04:30 UTC the next day, but the date as written counts.
        pytest.param("2021-02-15T23:30:00-05:00", date(2021, 2, 15), id="late-evening-negative-offset"),
        pytest.param("2021-02-15T00:30:00+14:00", date(2021, 2, 15), id="early-morning-plus-14"),
        pytest.param("2021-02-15T10:00:00.123+01:00", date(2021, 2, 15), id="fractional-seconds"),
        pytest.param("2021-02-15 10:00", date(2021, 2, 15), id="space-separator"),
        pytest.param("2021-02", date(2021, 2, 1), id="partial-year-month"),
        pytest.param("2021", date(2021, 1, 1), id="partial-year"),
        pytest.param(" 2021-02-15 ", date(2021, 2, 15), id="padded"),
        pytest.param("9999-12-31", date(9999, 12, 31), id="sentinel-end"),
        pytest.param("0001-01-01", date(1, 1, 1), id="sentinel-start"),
        pytest.param(date(2020, 5, 1), date(2020, 5, 1), id="date-object"),
        pytest.param(
            datetime(2021, 2, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5))),
            date(2021, 2, 15),
            id="aware-datetime-object-keeps-local-date",
        ),
    ],
)
def test_calendar_date_as_written(value: object, expected: date) -> None:
    assert calendar_date(value) == expected


@pytest.mark.protocol("3c-implausible")
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("2021-02-30", id="impossible-day"),
        pytest.param("2021-13-01", id="impossible-month"),
        pytest.param("0000-01-01", id="year-zero"),
        pytest.param("15/02/2021", id="european-format"),
        pytest.param("20210215", id="compact-format"),
        pytest.param("2021-02-15x", id="trailing-garbage"),
        pytest.param("", id="empty"),
        pytest.param(None, id="none"),
        pytest.param(20210215, id="number"),
    ],
)
def test_calendar_date_of_unreadable_values_is_none(value: object) -> None:
    assert calendar_date(value) is None


@pytest.mark.protocol("3b-dates")
@pytest.mark.parametrize(
    ("value", "instant", "expected"),
    [
        pytest.param("2021-02-15T10:00", False, "2021-02-15", id="datetime-without-seconds-or-zone"),
        pytest.param("2021-02-15 10:00:00", False, "2021-02-15", id="datetime-space-separator"),
        pytest.param("2021-02-15T23:30:00-0500", False, "2021-02-15", id="datetime-offset-without-colon"),
        pytest.param(
            "2021-02-15T10:00", True, "2021-02-15T10:00:00Z", id="instant-without-zone-taken-as-utc"
        ),
        pytest.param("2021-02-15T10:00:05", True, "2021-02-15T10:00:05Z", id="instant-keeps-seconds"),
        pytest.param(
            "2021-02-15T23:30:00-0500", True, "2021-02-15T23:30:00-05:00", id="instant-offset-gets-colon"
        ),
        pytest.param(
            "2021-02-15 08:15+01:00", True, "2021-02-15T08:15:00+01:00", id="instant-space-and-offset"
        ),
        pytest.param("2021-02-15", False, None, id="plain-date-is-no-quirk"),
        pytest.param("yesterday", True, None, id="not-a-datetime"),
    ],
)
def test_lenient_datetime(value: str, instant: bool, expected: str | None) -> None:
    assert lenient_datetime(value, instant=instant) == expected


@pytest.mark.protocol("3b-dates")
@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(
            {"effectiveDateTime": "2021-02-15T10:00"},
            {"effectiveDateTime": "2021-02-15"},
            id="quirky-effective-datetime",
        ),
        pytest.param(
            {"effectiveDateTime": "2021-02-15T10:00:00+01:00"},
            {"effectiveDateTime": "2021-02-15T10:00:00+01:00"},
            id="valid-datetime-untouched",
        ),
        pytest.param(
            {"effectiveDateTime": "2021-02-15T10:00:00"},
            {"effectiveDateTime": "2021-02-15"},
            id="seconds-without-zone",
        ),
        pytest.param(
            {"issued": "2021-02-15 10:00"},
            {"issued": "2021-02-15T10:00:00Z"},
            id="issued-is-an-instant",
        ),
        pytest.param(
            {"effectivePeriod": {"start": "2021-02-15T10:00", "end": "2021-02-16 11:00"}},
            {"effectivePeriod": {"start": "2021-02-15", "end": "2021-02-16"}},
            id="period-bounds",
        ),
        pytest.param(
            {"id": "2021-02-15T10:00", "status": "final"},
            {"id": "2021-02-15T10:00", "status": "final"},
            id="id-never-rewritten",
        ),
        pytest.param(
            {"valueQuantity": {"value": 1}, "note": [{"time": "2021-02-15T10:00"}]},
            {"valueQuantity": {"value": 1}, "note": [{"time": "2021-02-15T10:00"}]},
            id="nested-elements-left-to-validation",
        ),
    ],
)
def test_top_level_datetimes_fixed(resource: dict[str, Any], expected: dict[str, Any]) -> None:
    assert with_top_level_datetimes_fixed(dict(resource)) == expected
