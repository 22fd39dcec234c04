"""facts.dates: D + N months clamped to the month's end, windows with both ends included (protocol §3b)."""

from __future__ import annotations

import calendar
from datetime import date

import pytest

from cds_service.facts.dates import (
    Interval,
    _month_length,
    add_days,
    add_months,
    age_on,
    covered_days,
    covering,
    days_between,
    gaps,
    merge,
    next_day,
    previous_day,
)

pytestmark = pytest.mark.protocol("3b-months")


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        pytest.param(date(2021, 1, 15), 12, date(2022, 1, 15), id="same-day-a-year-later"),
        pytest.param(date(2021, 1, 31), 1, date(2021, 2, 28), id="jan-31-plus-1-clamps-to-feb-28"),
        pytest.param(date(2024, 1, 31), 1, date(2024, 2, 29), id="leap-year-feb-29"),
        pytest.param(date(2024, 2, 29), 12, date(2025, 2, 28), id="feb-29-plus-a-year"),
        pytest.param(date(2021, 8, 31), 33, date(2024, 5, 31), id="r7-33-months"),
        pytest.param(date(2021, 5, 31), -3, date(2021, 2, 28), id="lookback-clamps"),
        pytest.param(date(2022, 3, 1), -12, date(2021, 3, 1), id="lab-lookback-12-months"),
        pytest.param(date(2021, 12, 15), 1, date(2022, 1, 15), id="crosses-year-end"),
        pytest.param(date(2021, 1, 15), -1, date(2020, 12, 15), id="back-across-year-end"),
        pytest.param(date(2021, 6, 30), 0, date(2021, 6, 30), id="zero-months"),
        pytest.param(date(9999, 12, 31), 12, date.max, id="sentinel-plus-window-clamps"),
        pytest.param(date(1, 1, 1), -1, date.min, id="before-calendar-clamps"),
    ],
)
def test_add_months(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


@pytest.mark.parametrize(
    ("day", "days", "expected"),
    [
        pytest.param(date(2021, 12, 31), 1, date(2022, 1, 1), id="next-year"),
        pytest.param(date(2021, 1, 1), 213, date(2021, 8, 2), id="denosumab-213-days"),
        pytest.param(date(2024, 2, 28), 1, date(2024, 2, 29), id="leap-day"),
        pytest.param(date(9999, 12, 31), 183, date.max, id="sentinel-clamps"),
        pytest.param(date(1, 1, 1), -1, date.min, id="before-calendar-clamps"),
    ],
)
def test_add_days(day: date, days: int, expected: date) -> None:
    assert add_days(day, days) == expected


def test_neighbouring_days_and_day_counts() -> None:
    assert next_day(date(2021, 2, 28)) == date(2021, 3, 1)
    assert previous_day(date(2024, 3, 1)) == date(2024, 2, 29)
    assert days_between(date(2021, 1, 1), date(2022, 1, 1)) == 365
    assert days_between(date(2022, 1, 1), date(2021, 1, 1)) == -365


@pytest.mark.parametrize(
    ("birth", "day", "expected"),
    [
        pytest.param(date(1971, 3, 1), date(2021, 3, 1), 50, id="fiftieth-birthday"),
        pytest.param(date(1971, 3, 2), date(2021, 3, 1), 49, id="day-before-fiftieth"),
        pytest.param(date(1972, 2, 29), date(2022, 2, 28), 49, id="leap-birthday-not-yet"),
        pytest.param(date(1972, 2, 29), date(2022, 3, 1), 50, id="leap-birthday-passed"),
    ],
)
def test_age_on(birth: date, day: date, expected: int) -> None:
    assert age_on(birth, day) == expected


@pytest.mark.parametrize(
    ("interval", "day", "inside"),
    [
        pytest.param(Interval(date(2021, 1, 1), date(2021, 1, 31)), date(2021, 1, 1), True, id="first-day"),
        pytest.param(Interval(date(2021, 1, 1), date(2021, 1, 31)), date(2021, 1, 31), True, id="last-day"),
        pytest.param(Interval(date(2021, 1, 1), date(2021, 1, 31)), date(2021, 2, 1), False, id="after"),
        pytest.param(Interval(date(2021, 1, 1), date(2021, 1, 31)), date(2020, 12, 31), False, id="before"),
    ],
)
def test_interval_includes_both_ends(interval: Interval, day: date, inside: bool) -> None:
    assert interval.contains(day) is inside


def test_interval_days_and_clip() -> None:
    january = Interval(date(2021, 1, 1), date(2021, 1, 31))
    assert january.days == 31
    assert Interval(date(2021, 1, 1), date(2021, 1, 1)).days == 1
    assert january.clip(date(2021, 1, 10), date(2021, 3, 1)) == Interval(date(2021, 1, 10), date(2021, 1, 31))
    assert january.clip(date(2021, 2, 1), date(2021, 3, 1)) is None


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        pytest.param([], [], id="nothing"),
        pytest.param(
            [Interval(date(2021, 3, 1), date(2021, 3, 31)), Interval(date(2021, 1, 1), date(2021, 1, 31))],
            [Interval(date(2021, 1, 1), date(2021, 1, 31)), Interval(date(2021, 3, 1), date(2021, 3, 31))],
            id="sorted-apart",
        ),
        pytest.param(
            [Interval(date(2021, 1, 1), date(2021, 1, 31)), Interval(date(2021, 2, 1), date(2021, 2, 28))],
            [Interval(date(2021, 1, 1), date(2021, 2, 28))],
            id="adjacent-joined",
        ),
        pytest.param(
            [Interval(date(2021, 1, 1), date(2021, 3, 31)), Interval(date(2021, 2, 1), date(2021, 2, 28))],
            [Interval(date(2021, 1, 1), date(2021, 3, 31))],
            id="contained-absorbed",
        ),
        pytest.param(
            [Interval(date(2021, 1, 1), date(2021, 1, 31)), Interval(date(2021, 1, 15), date(2021, 2, 15))],
            [Interval(date(2021, 1, 1), date(2021, 2, 15))],
            id="overlap-extended",
        ),
    ],
)
def test_merge(intervals: list[Interval], expected: list[Interval]) -> None:
    assert merge(intervals) == expected


def test_covered_days_never_counts_a_day_twice() -> None:
    merged = merge(
        [Interval(date(2021, 1, 1), date(2021, 1, 31)), Interval(date(2021, 1, 15), date(2021, 2, 15))]
    )
    assert covered_days(merged, date(2021, 1, 1), date(2021, 12, 31)) == 46
    assert covered_days(merged, date(2021, 2, 1), date(2021, 2, 10)) == 10
    assert covered_days(merged, date(2022, 1, 1), date(2022, 12, 31)) == 0


@pytest.mark.parametrize(
    ("merged", "first", "last", "expected"),
    [
        pytest.param(
            [],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 1), date(2021, 1, 31))],
            id="no-cover",
        ),
        pytest.param(
            [Interval(date(2021, 1, 1), date(2021, 1, 10)), Interval(date(2021, 1, 21), date(2021, 1, 31))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 11), date(2021, 1, 20))],
            id="gap-between",
        ),
        pytest.param(
            [Interval(date(2021, 1, 5), date(2021, 1, 10))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 1), date(2021, 1, 4)), Interval(date(2021, 1, 11), date(2021, 1, 31))],
            id="gaps-both-sides",
        ),
        pytest.param(
            [Interval(date(2020, 1, 1), date(2020, 12, 31)), Interval(date(2021, 1, 11), date(9999, 12, 31))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 1), date(2021, 1, 10))],
            id="earlier-ignored-open-end",
        ),
        pytest.param(
            [Interval(date(2021, 2, 1), date(2021, 2, 28))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 1), date(2021, 1, 31))],
            id="later-ignored",
        ),
        pytest.param(
            [Interval(date(2020, 12, 1), date(2021, 1, 31))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [],
            id="fully-covered",
        ),
        pytest.param(
            [Interval(date(2021, 1, 1), date(2021, 1, 20)), Interval(date(2021, 1, 25), date(2021, 1, 30))],
            date(2021, 1, 1),
            date(2021, 1, 31),
            [Interval(date(2021, 1, 21), date(2021, 1, 24)), Interval(date(2021, 1, 31), date(2021, 1, 31))],
            id="last-day-uncovered",
        ),
    ],
)
def test_gaps(merged: list[Interval], first: date, last: date, expected: list[Interval]) -> None:
    assert gaps(merged, first, last) == expected


def test_covering() -> None:
    merged = [Interval(date(2021, 1, 1), date(2021, 1, 10)), Interval(date(2021, 2, 1), date(2021, 2, 10))]
    assert covering(merged, date(2021, 2, 10)) == merged[1]
    assert covering(merged, date(2021, 1, 20)) is None


def test_month_lengths_are_those_of_the_calendar() -> None:
    """add_months reads a month's length from its own table (monthrange also computes a weekday)."""
    for year in range(1, 10_000):
        for month in range(1, 13):
            assert _month_length(year, month) == calendar.monthrange(year, month)[1], (year, month)


def test_merge_sorts_as_intervals_order() -> None:
    """merge sorts by (start, end): the order the Interval dataclass defines (order=True)."""
    days = [date(2024, 1, day) for day in (1, 3, 5, 9)]
    intervals = [Interval(start, end) for start in days for end in days if start <= end][::-1]
    ordered = sorted(intervals)
    assert merge(intervals) == merge(ordered)
    assert [(i.start, i.end) for i in ordered] == sorted((i.start, i.end) for i in intervals)


def test_add_months_clamps_as_monthrange_does() -> None:
    """Only a day after the 28th is clamped (every month has 28 days): the same as clamping every day."""

    def careful(day: date, months: int) -> date:
        year, month = divmod(day.year * 12 + (day.month - 1) + months, 12)
        if not 1 <= year <= 9999:
            return date.min if year < 1 else date.max
        return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))

    days = [date.fromordinal(date(1999, 12, 1).toordinal() + offset) for offset in range(3 * 366)]
    for day in [*days, date(1, 1, 31), date(9999, 12, 31), date(9999, 1, 31)]:
        for months in (-120_000, -24, -13, -12, -1, 0, 1, 2, 11, 12, 13, 25, 120_000):
            assert add_months(day, months) == careful(day, months), (day, months)
