"""The value of an Observation or component as real EHRs send it (protocol §3c).

A value is a `valueQuantity` (with an optional `comparator`) or a `valueString`. A numeric string
(`"-2.5"`, `"<15"`, `">= 60"`, `"< 15 mL/min/1.73m2"`) is a value: its comparator is a bound in that
direction and the text after the number is its unit. Any other string is `Unreadable` (reported on the
card, counted as missing). A non-finite or absurdly large number is `Implausible`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from cds_service.core.frozen_init import one_step_init
from cds_service.facts.extract_common import units_of

Comparator = Literal["<", "<=", ">", ">="]
COMPARATORS: frozenset[str] = frozenset({"<", "<=", ">", ">="})
# Beyond any clinical quantity the protocol reads; also keeps later decimal arithmetic within precision.
MAX_MAGNITUDE = Decimal("1e9")
MAX_SHOWN_TEXT = 40
_SYMBOLS = {"≤": "<=", "≥": ">=", "=<": "<=", "=>": ">=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_NUMERIC_STRING = re.compile(
    r"^\s*(?P<comparator><=|>=|=<|=>|<|>|≤|≥)?\s*(?P<number>[+-]?(?:\d+(?:[.,]\d+)?|[.,]\d+))"
    r"(?:\s*(?P<unit>\S.*?))?\s*$"
)


@one_step_init
@dataclass(frozen=True)
class Measured:
    value: Decimal
    comparator: Comparator | None
    units: list[str]


@one_step_init
@dataclass(frozen=True)
class Unreadable:
    text: str  # shortened for the card (escaped later by the renderer)


@one_step_init
@dataclass(frozen=True)
class Implausible:
    text: str


ObservedValue = Measured | Unreadable | Implausible


def observed_value(value_quantity: Any, value_string: Any) -> ObservedValue | None:
    """The value of an Observation or component, or None when it has neither a quantity nor a string."""
    if value_quantity is not None:
        return _from_quantity(value_quantity)
    if isinstance(value_string, str):
        return from_string(value_string)
    return None


def _from_quantity(quantity: Any) -> ObservedValue | None:
    value = getattr(quantity, "value", None)
    if not isinstance(value, Decimal):
        return None
    if not value.is_finite() or abs(value) > MAX_MAGNITUDE:
        return Implausible(_shown_number(value))
    comparator = getattr(quantity, "comparator", None)
    return Measured(value, comparator if comparator in COMPARATORS else None, units_of(quantity))


def from_string(text: str) -> ObservedValue:
    match = _NUMERIC_STRING.match(text)
    if match is None:
        return Unreadable(shown_text(text))
    try:
        value = Decimal(match.group("number").replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern only admits decimal numbers
        return Unreadable(shown_text(text))
    if abs(value) > MAX_MAGNITUDE:
        return Implausible(shown_text(text))
    symbol = match.group("comparator")
    comparator: Comparator | None = _SYMBOLS[symbol] if symbol else None  # type: ignore[assignment]
    unit = match.group("unit")
    return Measured(value, comparator, [unit.strip()] if unit else [])


def shown_text(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_SHOWN_TEXT else flat[: MAX_SHOWN_TEXT - 1] + "…"


def _shown_number(value: Decimal) -> str:
    return shown_text(str(value))
