"""Validate a whole CDS Hooks feedback batch (notes §1.7 F1–F5) into normalised entries.

Nothing is stored unless every entry is valid: the error carries one OperationOutcome issue per bad
entry, whose `expression` lists that entry's bad elements (e.g. `feedback[3].outcomeTimestamp`).
Accepted variants: the spec's `overrideReason {reason: Coding, userComment}`; Epic's `overrideReasons`
(an object) with `reason` and/or `extension` keys `com.epic.cdshooks.feedback.overrideReason.*`;
the sandbox's `reason` without `display`. Timestamps become UTC instants (microsecond precision).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from cds_service.core.errors import BadRequest, Issue, ServiceError

MAX_ENTRIES = 5_000
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 2_048
MAX_SUGGESTIONS = 100
EPIC_REASON_SYSTEM = "urn:com.epic.cdshooks.feedback.overrideReason"
_EPIC_PREFIX = "com.epic.cdshooks.feedback.overrideReason."
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$"
)

Outcome = Literal["accepted", "overridden"]


@dataclass(frozen=True)
class OverrideReason:
    """The coded reason (any part may be absent) and whether the user typed a comment (never stored)."""

    system: str | None = None
    code: str | None = None
    display: str | None = None
    has_comment: bool = False


@dataclass(frozen=True)
class FeedbackItem:
    """One valid feedback entry; (card, outcome, outcome_ts) identifies it."""

    card: str
    outcome: Outcome
    outcome_ts: datetime  # aware, UTC
    accepted_suggestions: tuple[str, ...] = ()
    reason: OverrideReason | None = None

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.card, self.outcome, self.outcome_ts)


class TooManyEntries(ServiceError):
    """413: more feedback entries in one request than the service accepts."""

    def __init__(self, count: int, limit: int = MAX_ENTRIES) -> None:
        super().__init__(
            [Issue("too-long", f"{count} feedback entries; at most {limit} per request", ("feedback",))], 413
        )


@dataclass
class _Problems:
    """The problems of one entry: (expression, message) pairs."""

    prefix: str
    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, element: str, message: str) -> None:
        where = f"{self.prefix}.{element}" if element else self.prefix
        self.found.append((where, f"{where}: {message}"))

    def issue(self) -> Issue:
        code = "required" if all("is required" in m for _, m in self.found) else "invalid"
        expressions = tuple(dict.fromkeys(where for where, _ in self.found))
        return Issue(code, "; ".join(m for _, m in self.found), expressions)


def validate_feedback(body: Any) -> list[FeedbackItem]:
    """The batch's entries, in order; raises BadRequest (one issue per bad entry) or TooManyEntries."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", code="structure")
    entries = body.get("feedback")
    if entries is None:
        raise BadRequest("feedback is required", "feedback", "required")
    if not isinstance(entries, list):
        raise BadRequest("feedback: must be a JSON array", "feedback", "structure")
    if len(entries) > MAX_ENTRIES:
        raise TooManyEntries(len(entries))
    items: list[FeedbackItem] = []
    issues: list[Issue] = []
    for index, entry in enumerate(entries):
        problems = _Problems(f"feedback[{index}]")
        item = _entry(entry, problems)
        if problems.found or item is None:
            issues.append(problems.issue())
        else:
            items.append(item)
    if issues:
        error = BadRequest(issues[0].diagnostics)
        error.issues[:] = issues
        raise error
    return items


def parse_timestamp(value: str) -> datetime | None:
    """An RFC 3339 date-time as an aware UTC datetime (no offset = UTC; >6 fraction digits truncated)."""
    match = _RFC3339.match(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    fraction = (match.group(7) or "").ljust(6, "0")[:6]
    try:
        if match.group(9):
            offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
            tz = timezone(offset if match.group(9) == "+" else -offset)
        else:
            tz = UTC
        local = datetime(year, month, day, hour, minute, min(second, 59), int(fraction), tzinfo=tz)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _entry(entry: Any, problems: _Problems) -> FeedbackItem | None:
    if not isinstance(entry, dict):
        problems.add("", "must be a JSON object")
        return None
    card = _identifier(entry, "card", problems)
    outcome = entry.get("outcome")
    if outcome is None:
        problems.add("outcome", "is required")
    elif outcome not in ("accepted", "overridden"):
        problems.add("outcome", "must be 'accepted' or 'overridden'")
    when = _timestamp(entry, problems)
    accepted: tuple[str, ...] = ()
    reason: OverrideReason | None = None
    if outcome == "accepted":
        accepted = _accepted_suggestions(entry, problems)
    elif outcome == "overridden":
        reason = _override_reason(entry, problems)
    if problems.found or card is None or when is None or outcome not in ("accepted", "overridden"):
        return None
    return FeedbackItem(card, "accepted" if outcome == "accepted" else "overridden", when, accepted, reason)


def _identifier(entry: Mapping[str, Any], name: str, problems: _Problems) -> str | None:
    value = entry.get(name)
    if value is None:
        problems.add(name, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(name, "must be a non-empty JSON string")
        return None
    if len(value) > MAX_ID_CHARS:
        problems.add(name, f"must be at most {MAX_ID_CHARS} characters")
        return None
    return value


def _timestamp(entry: Mapping[str, Any], problems: _Problems) -> datetime | None:
    value = entry.get("outcomeTimestamp")
    if value is None:
        problems.add("outcomeTimestamp", "is required")
        return None
    parsed = parse_timestamp(value) if isinstance(value, str) else None
    if parsed is None:
        problems.add("outcomeTimestamp", "must be an RFC 3339 date-time, e.g. 2025-06-01T14:30:00Z")
    return parsed


def _accepted_suggestions(entry: Mapping[str, Any], problems: _Problems) -> tuple[str, ...]:
    value = entry.get("acceptedSuggestions")
    if value is None:
        problems.add("acceptedSuggestions", "is required when outcome is 'accepted'")
        return ()
    if not isinstance(value, list) or not value:
        problems.add("acceptedSuggestions", "must be a non-empty JSON array of {id}")
        return ()
    if len(value) > MAX_SUGGESTIONS:
        problems.add("acceptedSuggestions", f"must hold at most {MAX_SUGGESTIONS} suggestions")
        return ()
    ids: list[str] = []
    for index, suggestion in enumerate(value):
        if not isinstance(suggestion, dict):
            problems.add(f"acceptedSuggestions[{index}]", "must be a JSON object with an id")
            continue
        sub = _identifier(suggestion, "id", _Problems(""))
        if sub is None:
            problems.add(f"acceptedSuggestions[{index}].id", "must be a non-empty JSON string")
        else:
            ids.append(sub)
    return tuple(dict.fromkeys(ids))


def _override_reason(entry: Mapping[str, Any], problems: _Problems) -> OverrideReason | None:
    key = "overrideReason" if "overrideReason" in entry else "overrideReasons"
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(key, "must be a JSON object")
        return None
    before = len(problems.found)
    comment = value.get("userComment")
    if comment is not None and not isinstance(comment, str):
        problems.add(f"{key}.userComment", "must be a JSON string")
    system, code, display = _coding(value.get("reason"), f"{key}.reason", problems)
    epic = _epic_reason(value.get("extension"), f"{key}.extension", problems)
    if code is None and epic is not None:
        system, code = EPIC_REASON_SYSTEM, epic[0]
    if display is None and epic is not None:
        display = epic[1]
    has_comment = isinstance(comment, str) and bool(comment.strip())
    if len(problems.found) > before:
        return None
    if code is None and display is None and not has_comment:
        problems.add(key, "needs a reason or a userComment")
        return None
    return OverrideReason(system, code, display, has_comment)


def _coding(value: Any, where: str, problems: _Problems) -> tuple[str | None, str | None, str | None]:
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        problems.add(where, "must be a Coding (JSON object)")
        return None, None, None
    code = _optional_text(value, "code", where, problems)
    if code is None:
        problems.add(f"{where}.code", "is required")
    system = _optional_text(value, "system", where, problems)
    display = _optional_text(value, "display", where, problems)
    return system, code, display


def _optional_text(value: Mapping[str, Any], name: str, where: str, problems: _Problems) -> str | None:
    text = value.get(name)
    if text is None:
        return None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
        problems.add(
            f"{where}.{name}", f"must be a non-empty JSON string of at most {MAX_TEXT_CHARS} characters"
        )
        return None
    return text


def _epic_reason(value: Any, where: str, problems: _Problems) -> tuple[str | None, str | None] | None:
    """(code, display) from Epic's reasonCategory / reasonDisplay / reasonTitle extension fields."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.add(where, "must be a JSON object")
        return None
    fields: dict[str, str] = {}
    for name, text in _flattened(value):
        if not name.startswith(_EPIC_PREFIX):
            continue
        short = name.removeprefix(_EPIC_PREFIX)
        if isinstance(text, bool) or not isinstance(text, str | int) or len(str(text)) > MAX_TEXT_CHARS:
            problems.add(f"{where}.{name}", "must be a JSON string")
        elif str(text).strip():
            fields[short] = str(text).strip()
    code = fields.get("reasonCategory") or fields.get("reasonTitle")
    display = fields.get("reasonDisplay") or fields.get("reasonTitle")
    return (code, display) if code or display else None


def _flattened(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys, whether Epic sends them flat ("com.epic...reasonTitle") or nested."""
    for name, item in value.items():
        dotted = f"{prefix}{name}"
        if isinstance(item, dict):
            yield from _flattened(item, dotted + ".")
        else:
            yield dotted, item
