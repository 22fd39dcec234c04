"""Lab Observations that can never be read: skipped unvalidated when the evaluation date is known."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from cds_service.core.fhir_id import is_fhir_id
from cds_service.facts import relevance
from cds_service.facts.dates import add_months
from cds_service.facts.observation_kinds import LAB_KINDS, WANTED_KINDS, lab_factor
from cds_service.facts.read_elements import READ_ELEMENTS
from cds_service.knowledge.indexed import Knowledge

# Elements a skippable lab may have after `read_elements`: anything else is validated as usual.
_SKIPPABLE_LAB_ELEMENTS = frozenset(
    {"resourceType", "id", "status", "code", "effectiveDateTime", "valueQuantity", "referenceRange"}
)
_UNSKIPPABLE_LAB_ELEMENTS = READ_ELEMENTS["Observation"] - _SKIPPABLE_LAB_ELEMENTS
_STRICT_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?(?:Z|[+-](\d{2}):(\d{2})))?$"
)
# The common shapes of `_STRICT_DATETIME` with its range checks written in: ASCII digits only, no trailing
# newline (`$` allows one). A value it matches is strict; any other value is judged by `_careful_strict_day`.
_COMMON_STRICT_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-4]):[0-5][0-9]))?"
).fullmatch
_FHIR_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")
_FHIR_URI = re.compile(r"^\S+$")
_FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
_SIMPLE_QUANTITY_KEYS = frozenset({"value", "unit", "system", "code"})
_QUANTITY_KEYS = _SIMPLE_QUANTITY_KEYS | {"comparator"}
_UNSEEN = object()


@dataclass(frozen=True)
class LabWindow:
    """Skips lab Observations that validation would turn into nothing the protocol reads.

    Labs are read only within `lab_lookback_months` before as_of (clinical.labs.latest). A lab dated
    outside that window is skipped when skipping it is invisible downstream: every element it has
    passes a strict check that implies FHIR validation succeeds (so it would not be counted as
    unreadable), it has a date (else extraction adds a caveat), and its value, if any, has a unit
    that extraction recognises (else it adds a caveat). Anything unusual is validated as before.
    """

    knowledge: Knowledge
    start: date
    end: date
    wanted_kinds: frozenset[str]
    lab_kinds: frozenset[str]
    lab_factor: Any
    # Per call: the lab kind of a code, by the raw (system, code) pairs of its codings (a record repeats
    # a few lab codes hundreds of times).
    kind_memo: dict[tuple[tuple[str, str], ...], str | None] = field(default_factory=dict)
    # Per call: the lab kind of a code whose code and reference range are valid (else None), by their JSON
    # text.
    valid_memo: dict[bytes, str | None] = field(default_factory=dict)
    # Per call: whether a lab kind's value in the common quantity shape (value, unit, system, code) is valid
    # and in a recognised unit, by (kind, code, system, unit) as written.
    unit_memo: dict[tuple[Any, ...], bool] = field(default_factory=dict)

    @classmethod
    def build(cls, knowledge: Knowledge, as_of: date) -> LabWindow:
        # One source of truth for kinds and units: the table extraction reads (`observation_kinds`).
        start = add_months(as_of, -knowledge.windows.lab_lookback_months)
        return cls(knowledge, start, as_of, frozenset(WANTED_KINDS), frozenset(LAB_KINDS), lab_factor)

    def never_read(self, resource: dict[str, Any]) -> bool:
        if resource.get("modifierExtension") or resource.get("resourceType") != "Observation":
            return False  # a root modifierExtension: not read at all (`has_modifier_extension`)
        if not _UNSKIPPABLE_LAB_ELEMENTS.isdisjoint(resource):
            return False
        day = _strict_day(resource.get("effectiveDateTime"))
        if day is None or self.start <= day <= self.end:
            return False
        kind = self._valid_lab_kind(resource.get("code"), resource.get("referenceRange"))
        if kind is None:
            return False
        rid = resource.get("id")
        if (rid is not None and not is_fhir_id(rid)) or resource.get("status") not in _FINAL_STATUSES:
            return False
        quantity = resource.get("valueQuantity")
        if quantity is None:
            return "valueQuantity" not in resource
        if quantity.__class__ is dict and quantity.keys() == _SIMPLE_QUANTITY_KEYS:
            value = quantity["value"]
            if value.__class__ is int or value.__class__ is float:  # not a bool: its class is bool
                # The common shape: the verdict depends on the value's type (checked) and on these only.
                key = (kind, quantity["code"], quantity["system"], quantity["unit"])
                try:
                    found = self.unit_memo.get(key)
                except TypeError:  # an unhashable code, system or unit: judged as is, never valid
                    return self._readable_value(kind, quantity)
                if found is None:
                    found = self.unit_memo[key] = self._readable_value(kind, quantity)
                return found
        return self._readable_value(kind, quantity)

    def _readable_value(self, kind: str, quantity: Any) -> bool:
        """A valid Quantity whose value, if any, is in a unit extraction recognises for `kind`."""
        if not _valid_quantity(quantity, simple=False):
            return False
        units = [str(u).strip() for u in (quantity.get("code"), quantity.get("unit")) if u]
        return "value" not in quantity or self.lab_factor(kind, units) is not None

    def _valid_lab_kind(self, code: Any, ranges: Any) -> str | None:
        """The lab kind of `code` when `code` and `ranges` are valid (`_valid_concept`, `_valid_ranges`), else
        None; memoised by their JSON text: a record repeats the same code and reference range across hundreds
        of labs (same JSON text, same verdict).

        Not memoised: what has no JSON text, and any `null` (orjson also writes NaN and infinities so).
        The input is parsed JSON; a Python tuple (written as a JSON array) could only be judged a valid lab
        code where the direct check says no, and such a lab, validated, would still yield nothing (outside
        the window).
        """
        try:
            key = orjson.dumps((code, ranges))  # always a pair: a list-valued code cannot pose as one
        except (TypeError, orjson.JSONEncodeError):
            key = b"null"
        if b"null" in key:
            return self._judged_lab_kind(code, ranges)
        kind = self.valid_memo.get(key, _UNSEEN)
        if kind is _UNSEEN:
            kind = self.valid_memo[key] = self._judged_lab_kind(code, ranges)
        return kind  # type: ignore[return-value]

    def _judged_lab_kind(self, code: Any, ranges: Any) -> str | None:
        kind = self._lab_kind(code)
        return kind if kind is not None and _valid_concept(code) and _valid_ranges(ranges) else None

    def _lab_kind(self, concept: Any) -> str | None:
        """The kind extraction would give the value (its first wanted table entry), if a lab kind."""
        key = relevance.raw_code_keys(concept)
        if key in self.kind_memo:
            return self.kind_memo[key]
        kind = self.kind_memo[key] = self._lab_kind_of(concept)
        return kind

    def _lab_kind_of(self, concept: Any) -> str | None:
        for system, code, _ in relevance.raw_codings(concept):
            for entry in self.knowledge.observation_codes(system, code):
                if entry.kind in self.wanted_kinds:
                    return entry.kind if entry.kind in self.lab_kinds else None
        return None


def _strict_day(value: Any) -> date | None:
    """The calendar date of a complete, valid FHIR date or dateTime with a zone; else None."""
    if value.__class__ is str and _COMMON_STRICT_DATETIME(value) is not None:
        # ASCII digits, every range already checked: the date is that of its first ten characters.
        try:
            return date.fromisoformat(value[:10])
        except ValueError:  # a day the month does not have
            return None
    return _careful_strict_day(value)


def _careful_strict_day(value: Any) -> date | None:
    match = _STRICT_DATETIME.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    year, month, day, hours, minutes, seconds, zone_hours, zone_minutes = match.groups()
    if hours is not None and (int(hours) > 23 or int(minutes) > 59 or int(seconds) > 59):
        return None
    if zone_hours is not None and (int(zone_hours) > 14 or int(zone_minutes) > 59):
        return None
    try:
        parsed = date(int(year), int(month), int(day))
    except ValueError:
        return None
    return parsed if parsed.year >= 1 else None


def _valid_string(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _valid_code(value: Any) -> bool:
    return isinstance(value, str) and _FHIR_CODE.match(value) is not None


def _valid_uri(value: Any) -> bool:
    return isinstance(value, str) and _FHIR_URI.match(value) is not None


def _valid_concept(concept: Any) -> bool:
    """A CodeableConcept of codings with system, code and display only, every value well-formed."""
    if not isinstance(concept, dict) or not concept or not set(concept) <= {"coding", "text"}:
        return False
    if "text" in concept and not _valid_string(concept["text"]):
        return False
    codings = concept.get("coding")
    if not isinstance(codings, list) or not codings:
        return False
    for coding in codings:
        if not isinstance(coding, dict) or not coding or not set(coding) <= {"system", "code", "display"}:
            return False
        if "system" in coding and not _valid_uri(coding["system"]):
            return False
        if "code" in coding and not _valid_code(coding["code"]):
            return False
        if "display" in coding and not _valid_string(coding["display"]):
            return False
    return True


def _valid_quantity(quantity: Any, *, simple: bool) -> bool:
    allowed = _SIMPLE_QUANTITY_KEYS if simple else _QUANTITY_KEYS
    if not isinstance(quantity, dict) or not quantity or not set(quantity) <= allowed:
        return False
    value = quantity.get("value", 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if "comparator" in quantity and quantity["comparator"] not in ("<", "<=", ">=", ">"):
        return False
    if "code" in quantity and ("system" not in quantity or not _valid_code(quantity["code"])):
        return False
    if "system" in quantity and not _valid_uri(quantity["system"]):
        return False
    return "unit" not in quantity or _valid_string(quantity["unit"])


def _valid_ranges(ranges: Any) -> bool:
    if ranges is None:
        return True
    if not isinstance(ranges, list) or not ranges:
        return False
    for item in ranges:
        if not isinstance(item, dict) or not item or not set(item) <= {"low", "high", "text"}:
            return False
        if "text" in item and not _valid_string(item["text"]):
            return False
        for bound in ("low", "high"):
            if bound in item and not _valid_quantity(item[bound], simple=True):
                return False
    return True
