"""Small helpers shared by the extraction modules (validated R4B resources -> plain values)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Generic, TypeVar

from cds_service.facts.code_match import KNOWN_SYSTEMS, canonical_system, normalise_code
from cds_service.facts.fhir_dates import calendar_date
from cds_service.knowledge.schema import ICD_SYSTEMS

__all__ = [
    "Caveats",
    "Coding3",
    "PerCall",
    "calendar_date",
    "codings",
    "concept_texts",
    "decimal_text",
    "effective_date",
    "first_text",
    "round_2",
    "unit_of",
    "units_of",
]

Coding3 = tuple[str, str, str]  # (canonical system, normalised code, display)
# System URIs as sent -> canonical_system of them, for the systems the tables use (no call for those).
_CANONICAL = {system: canonical_system(system) for system in KNOWN_SYSTEMS}
_Answer = TypeVar("_Answer")
_NOT_YET = object()


@dataclass
class Caveats:
    """Extraction caveats in first-seen order, without duplicates."""

    items: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self.items)


class PerCall(Generic[_Answer]):
    """A pure function's answers within one extraction call: each argument tuple is computed once.

    A record repeats the same texts (drug, dosage, device) on many resources. Create one per call and
    drop it with the call: the arguments are patient data, never kept across calls. Answers are shared
    between callers, so the function must return values nobody changes (tuples, frozen objects).
    """

    def __init__(self, function: Callable[..., _Answer]) -> None:
        self._function = function
        self._answers: dict[tuple[Hashable, ...], Any] = {}

    def __call__(self, *args: Hashable) -> _Answer:
        answer = self._answers.get(args, _NOT_YET)
        if answer is _NOT_YET:
            answer = self._answers[args] = self._function(*args)
        return answer  # type: ignore[no-any-return]


def codings(concept: Any) -> list[Coding3]:
    """(system, code, display) of every coding of a CodeableConcept (validated model or None)."""
    out: list[Coding3] = []
    for coding in getattr(concept, "coding", None) or ():
        system = _CANONICAL.get(coding.system) or canonical_system(coding.system)
        code = coding.code
        # A code of a system other than ICD is only stripped (normalise_code), no call needed.
        code = normalise_code(system, code) if system in ICD_SYSTEMS or not code else code.strip()
        out.append((system, code, coding.display or ""))
    return out


def concept_texts(concept: Any, coded: list[Coding3] | None = None) -> list[str]:
    """`text`, then every coding display, of a CodeableConcept (`coded`: its `codings`, when already read)."""
    texts: list[str] = []
    text = getattr(concept, "text", None)
    if isinstance(text, str) and text.strip():
        texts.append(text)
    if coded is None:
        coded = codings(concept)
    for _, _, display in coded:
        if display.strip():
            texts.append(display)
    return texts


def first_text(texts: Iterable[str]) -> str:
    for text in texts:
        if text.strip():
            return text
    return ""


def decimal_text(value: Decimal) -> str:
    """`70` for Decimal("70.0"), `0.05` for Decimal("0.050"): no exponent, no trailing zeros."""
    normalised = value.normalize()
    return format(normalised, "f")


def round_2(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def unit_of(quantity: Any) -> str:
    """The UCUM code of a Quantity, else its human unit ('' when neither is present)."""
    code = getattr(quantity, "code", None)
    unit = getattr(quantity, "unit", None)
    return str(code or unit or "").strip()


def units_of(quantity: Any) -> list[str]:
    """Both the UCUM code and the human unit of a Quantity (either may identify the unit)."""
    units: list[str] = []
    code = getattr(quantity, "code", None)
    if code:
        units.append(str(code).strip())
    unit = getattr(quantity, "unit", None)
    if unit:
        units.append(str(unit).strip())
    return units


def effective_date(resource: Any) -> date | None:
    """effectiveDateTime, else effectivePeriod.start (else its end), else effectiveInstant (raw value)."""
    value = getattr(resource, "effectiveDateTime", None)
    if value is None and getattr(resource, "effectivePeriod", None) is not None:
        value = resource.effectivePeriod.start or resource.effectivePeriod.end
    if value is None:
        value = getattr(resource, "effectiveInstant", None)
    return calendar_date(value)
