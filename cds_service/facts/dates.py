"""Calendar arithmetic and day intervals (protocol §3b conventions).

- D + N months is the same day N months later, clamped to the month's end.
- Windows include both ends; an interval's end is its last covered day.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

ONE_DAY = timedelta(days=1)


def add_months(day: date, months: int) -> date:
    """Same day `months` later (negative: earlier), clamped to the month's last day.

    Total: a result before 0001-01-01 or after 9999-12-31 (a sentinel date plus a window) is clamped
    to `date.min` / `date.max` instead of raising, so no input date can fail a call.
    """
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    if year < date.min.year:
        return date.min
    if year > date.max.year:
        return date.max
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def add_days(day: date, days: int) -> date:
    """`day` + `days`, clamped to `date.min` / `date.max` (total, like `add_months`)."""
    ordinal = day.toordinal() + days
    if ordinal < date.min.toordinal():
        return date.min
    if ordinal > date.max.toordinal():
        return date.max
    return date.fromordinal(ordinal)


def next_day(day: date) -> date:
    return add_days(day, 1)


def previous_day(day: date) -> date:
    return add_days(day, -1)


def days_between(start: date, end: date) -> int:
    """Whole days from `start` to `end` (end - start)."""
    return (end - start).days


def age_on(birth_date: date, on: date) -> int:
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


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

    def clip(self, lo: date, hi: date) -> Interval | None:
        start, end = max(self.start, lo), min(self.end, hi)
        return Interval(start, end) if start <= end else None


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of intervals: sorted, overlapping or adjacent ones joined (no day counted twice)."""
    out: list[Interval] = []
    for iv in sorted(intervals):
        if out and iv.start <= next_day(out[-1].end):
            if iv.end > out[-1].end:
                out[-1] = Interval(out[-1].start, iv.end)
        else:
            out.append(iv)
    return out


def covered_days(merged: Iterable[Interval], lo: date, hi: date) -> int:
    total = 0
    for iv in merged:
        part = iv.clip(lo, hi)
        if part:
            total += part.days
    return total


def gaps(merged: list[Interval], lo: date, hi: date) -> list[Interval]:
    """Uncovered stretches within lo..hi (inclusive) of already merged intervals."""
    out: list[Interval] = []
    cursor = lo
    for iv in merged:
        if iv.end < lo:
            continue
        if iv.start > hi:
            break
        if iv.start > cursor:
            out.append(Interval(cursor, min(previous_day(iv.start), hi)))
        if iv.end >= hi or iv.end == date.max:
            return out
        cursor = max(cursor, next_day(iv.end))
        if cursor > hi:
            break
    if cursor <= hi:
        out.append(Interval(cursor, hi))
    return out


def covering(merged: Iterable[Interval], day: date) -> Interval | None:
    for iv in merged:
        if iv.contains(day):
            return iv
    return None
