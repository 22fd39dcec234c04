"""FHIR date, dateTime and instant text: the calendar date as written, and lenient fixes of real-world quirks.

The one place that reads FHIR date strings (protocol §3b): parsing patches quirky dateTimes with it,
and extraction takes every calendar date from it.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

_DATE_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?=$|[T ])")
_DATETIME_QUIRK = re.compile(
    r"^(\d{4}-\d{2}-\d{2})([T ])(\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_QUIRK_MIN_CHARS = len("2021-01-01T10:00")
_INSTANT_KEYS = frozenset({"issued", "effectiveInstant"})


def calendar_date(value: object) -> date | None:
    """The calendar date of a FHIR date/dateTime/instant, as written (protocol §3b).

    Never converted to UTC: `2021-02-15T23:30:00-05:00` is 2021-02-15. Partial dates (`YYYY-MM`,
    `YYYY`) give the first day of the month/year: a start is taken as early as written; callers
    that need an end or a precise event date must treat partial dates as imprecise themselves.
    """
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    match = _DATE_PREFIX.match(value.strip())
    if match is None:
        return None
    year, month, day = match.group(1), match.group(2) or "1", match.group(3) or "1"
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        return None


def with_top_level_datetimes_fixed(data: dict[str, Any]) -> dict[str, Any]:
    """Fix quirky dateTimes of top-level elements and Periods up front (saves a failed validation)."""
    for key, value in data.items():
        if isinstance(value, str):
            if key != "id" and _may_be_quirky(value):
                data[key] = _fixed_if_quirky(value, instant=key in _INSTANT_KEYS) or value
        elif isinstance(value, dict) and key.endswith("Period"):
            data[key] = {
                k: (_fixed_if_quirky(v, instant=False) or v if _may_be_quirky(v) else v)
                if isinstance(v, str)
                else v
                for k, v in value.items()
            }
    return data


def _may_be_quirky(value: str) -> bool:
    """False when `_fixed_if_quirky` surely returns None, read without a regex: `_DATETIME_QUIRK` needs 16
    characters and `T` or a space the 11th, and a `T` dateTime with seconds (a `:` the 17th character) and a
    `Z` or `+hh:mm` / `-hh:mm` zone at its end is valid as it is (or not a dateTime at all)."""
    if len(value) < _QUIRK_MIN_CHARS:
        return False
    separator = value[10]
    if separator != "T":
        return separator == " "
    if value[16:17] != ":":
        return True  # no seconds
    return not (value[-1] == "Z" or (value[-3] == ":" and value[-6] in "+-"))


def _fixed_if_quirky(value: str, *, instant: bool) -> str | None:
    match = _DATETIME_QUIRK.match(value)
    if match is None:
        return None
    _, separator, _, seconds, offset = match.groups()
    if separator == "T" and seconds and offset and (offset == "Z" or ":" in offset):
        return None  # already a valid FHIR dateTime/instant
    return lenient_datetime(value, instant=instant)


def lenient_datetime(value: str, *, instant: bool) -> str | None:
    """A valid form of a quirky dateTime: the date part as written (an instant keeps its time)."""
    match = _DATETIME_QUIRK.match(value.strip())
    if match is None:
        return None
    day, _, hours_minutes, seconds, offset = match.groups()
    if not instant:
        return day
    zone = offset if offset and ":" in offset else "Z" if not offset else f"{offset[:3]}:{offset[3:]}"
    return f"{day}T{hours_minutes}{seconds or ':00'}{zone}"
