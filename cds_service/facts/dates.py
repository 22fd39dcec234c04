"""Calendar arithmetic and day intervals (protocol §3b conventions).

- D + N months is the same day N months later, clamped to the month's end.
- Windows include both ends; an interval's end is its last covered day.
"""

from __future__ import annotations

from calendar import isleap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, date, timedelta
from operator import attrgetter

from cds_service.core.frozen_init import one_step_init

ONE_DAY = timedelta(days=1)
_FIRST_ORDINAL = date.min.toordinal()
_LAST_ORDINAL = date.max.toordinal()
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February of a common year


def add_months(day: date, months: int) -> date:
    """Same day `months` later (negative: earlier), clamped to the month's last day.

    Total: a result before 0001-01-01 or after 9999-12-31 (a sentinel date plus a window) is clamped
    to `date.min` / `date.max` instead of raising, so no input date can fail a call.
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    if year < MINYEAR:
        return date.min
    if year > MAXYEAR:
        return date.max
    day_of_month = day.day
    if day_of_month > 28:  # every month has 28 days: only a later day may need clamping
        day_of_month = min(day_of_month, _month_length(year, month + 1))
    return date(year, month + 1, day_of_month)


def _month_length(year: int, month: int) -> int:
    """Days in `month` of `year` (`calendar.monthrange(year, month)[1]`, without the weekday)."""
    return _MONTH_DAYS[month] + (month == 2 and isleap(year))


def add_days(day: date, days: int) -> date:
    """`day` + `days`, clamped to `date.min` / `date.max` (total, like `add_months`)."""
    ordinal = day.toordinal() + days
    if ordinal < _FIRST_ORDINAL:
        return date.min
    if ordinal > _LAST_ORDINAL:
        return date.max
    return date.fromordinal(ordinal)


def next_day(day: date) -> date:
    return add_days(day, 1)


def previous_day(day: date) -> date:
    return add_days(day, -1)


def days_between(start: date, end: date) -> int:
    """Whole days from `start` to `end` (end - start)."""
    return (end - start).days


def age_on(birth_date: date, day: date) -> int:
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


@one_step_init
@dataclass(frozen=True, order=True)
class Interval:
    """Covered days `start`..`end`, both inclusive."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    def clip(self, first_day: date, last_day: date) -> Interval | None:
        start, end = max(self.start, first_day), min(self.end, last_day)
        return Interval(start, end) if start <= end else None


_BOUNDS = attrgetter("start", "end")


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of intervals: sorted, overlapping or adjacent ones joined (no day counted twice)."""
    out: list[Interval] = []
    # By (start, end), the order `Interval` defines, compared as tuples instead of through its __lt__.
    for interval in sorted(intervals, key=_BOUNDS):
        # Overlapping or adjacent: it starts at most one day after the last end (next_day, uncalled).
        if out and (interval.start - out[-1].end).days <= 1:
            if interval.end > out[-1].end:
                out[-1] = Interval(out[-1].start, interval.end)
        else:
            out.append(interval)
    return out


def covered_days(merged: Iterable[Interval], first_day: date, last_day: date) -> int:
    total = 0
    for interval in merged:  # the days of interval.clip(first_day, last_day), without building it
        start, end = max(interval.start, first_day), min(interval.end, last_day)
        if start <= end:
            total += (end - start).days + 1
    return total


def gaps(merged: list[Interval], first_day: date, last_day: date) -> list[Interval]:
    """Uncovered stretches within first_day..last_day (inclusive) of already merged intervals."""
    out: list[Interval] = []
    cursor = first_day
    for interval in merged:
        if interval.end < first_day:
            continue
        if interval.start > last_day:
            break
        if interval.start > cursor:  # after cursor >= date.min: the day before needs no clamping
            out.append(Interval(cursor, min(interval.start - ONE_DAY, last_day)))
        if interval.end >= last_day or interval.end == date.max:
            return out
        cursor = max(cursor, interval.end + ONE_DAY)  # before date.max: no clamping either
        if cursor > last_day:
            break
    if cursor <= last_day:
        out.append(Interval(cursor, last_day))
    return out


def covering(merged: Iterable[Interval], day: date) -> Interval | None:
    for interval in merged:
        if interval.contains(day):
            return interval
    return None
