"""Raw FHIR R4 JSON -> validated `fhir.resources.R4B` objects, filtered cheaply first.

Validating a resource with pydantic costs far more than reading its JSON, so every raw dict is
first filtered by resource type, by the protocol's "ignored everywhere" statuses (protocol §2) and
by relevance to the code tables. Only what passes is validated, entry by entry: a relevant entry
that still fails is dropped and counted, and logged by position, type and exception type only
(never a value: the data are PHI).

Only the elements the protocol reads are validated and kept (`relevance.READ_ELEMENTS`): an
unreadable element nobody reads does not lose the resource, and validation costs less. A resource
with a root `modifierExtension` is not read (its meaning may differ) and is counted as unreadable.

Lenient on real-world quirks that would otherwise lose usable data (patched in a copy): naive,
minute-only or space-separated dateTimes (the date part is kept as written, §3b; an instant gets
`Z`), empty strings, and unknown elements (ignored). Unknown extensions, absolute references,
`urn:uuid` references and contained Medications are valid R4 and need no patching.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import orjson
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationadministration import MedicationAdministration
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from pydantic import ValidationError

from cds_service.clinical import relevance
from cds_service.clinical.relevance import reference_key
from cds_service.fhir_id import is_fhir_id
from cds_service.knowledge.loader import Knowledge

_LOG = logging.getLogger(__name__)

MEDICATION_USE_TYPES = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"}
)
_MODELS: dict[str, Any] = {
    "Patient": Patient,
    "Observation": Observation,
    "Condition": Condition,
    "Procedure": Procedure,
    "AllergyIntolerance": AllergyIntolerance,
    "MedicationStatement": MedicationStatement,
    "MedicationRequest": MedicationRequest,
    "MedicationAdministration": MedicationAdministration,
    "MedicationDispense": MedicationDispense,
    "DiagnosticReport": DiagnosticReport,
    "Medication": Medication,
    "Device": Device,
}
# Kept only when a relevant resource references them.
_REFERENCED_TYPES = frozenset({"Medication", "Device"})
_DATE_PREFIX = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?=$|[T ])")
_DATETIME_QUIRK = re.compile(
    r"^(\d{4}-\d{2}-\d{2})([T ])(\d{2}:\d{2})(:\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_INSTANT_KEYS = frozenset({"issued", "effectiveInstant"})
_MAX_PATCH_ROUNDS = 3


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


@dataclass(frozen=True)
class ParsedResources:
    """The validated, relevant resources of one patient record (duplicates by type+id removed).

    `any_medication_resource`: a MedicationStatement/Request/Administration/Dispense of any drug
    existed whose status is not `entered-in-error` (other ignored statuses still show that a
    medication feed was supplied; R6 distinguishes "no medication data" from "other drugs only").
    `medications` / `devices`: referenced resources keyed by `Type/id` and by fullUrl.
    """

    patients: tuple[Patient, ...] = ()
    observations: tuple[Observation, ...] = ()
    conditions: tuple[Condition, ...] = ()
    procedures: tuple[Procedure, ...] = ()
    allergies: tuple[AllergyIntolerance, ...] = ()
    medication_statements: tuple[MedicationStatement, ...] = ()
    medication_requests: tuple[MedicationRequest, ...] = ()
    medication_administrations: tuple[MedicationAdministration, ...] = ()
    medication_dispenses: tuple[MedicationDispense, ...] = ()
    diagnostic_reports: tuple[DiagnosticReport, ...] = ()
    medications: Mapping[str, Medication] = field(default_factory=dict)
    devices: Mapping[str, Device] = field(default_factory=dict)
    any_medication_resource: bool = False
    unreadable: dict[str, int] = field(default_factory=dict)
    ignored_by_status: dict[str, int] = field(default_factory=dict)
    unresolved_medication_references: int = 0
    medications_named_other: int = 0  # display-only references naming no osteoporosis drug


_FIELD_OF_TYPE = dict(
    Patient="patients", Observation="observations", Condition="conditions", Procedure="procedures",
    AllergyIntolerance="allergies", MedicationStatement="medication_statements",
    MedicationRequest="medication_requests", MedicationAdministration="medication_administrations",
    MedicationDispense="medication_dispenses", DiagnosticReport="diagnostic_reports",
)  # fmt: skip


@dataclass
class _Entry:
    index: int
    full_url: str | None
    resource: dict[str, Any]
    reuse: _Reuse | None = None
    resource_type: str = field(init=False)

    def __post_init__(self) -> None:
        self.resource_type = str(self.resource.get("resourceType", ""))


class _Reuse:
    """Validated element values of one call, by resource type, element name and raw JSON.

    A record repeats the same coded elements hundreds of times (the LOINC `code` of every eGFR, its
    `referenceRange`, a drug's `medicationCodeableConcept` and dosage, a Condition's statuses). A
    FHIR element validates the same wherever it appears, so once a resource validated at the first
    try (no patched quirk), its element values are reused for byte-identical raw elements of later
    resources of the same type. Only elements that validated are ever reused; if validation with
    reused values fails, the entry is validated again from its raw data exactly as before.
    Lives for one parse_resources call: nothing is shared between calls (or patients).
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, bytes], Any] = {}

    def prepared(
        self, model: Any, rtype: str, data: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """`data` with known element values substituted, and the raw JSON of the elements left raw."""
        fields = model.model_fields
        values = self._values
        out = data
        fresh: dict[str, bytes] = {}
        for key, value in data.items():
            if not isinstance(value, dict | list) or key not in fields or key == "contained":
                continue
            try:
                raw = orjson.dumps(value)
            except (TypeError, orjson.JSONEncodeError):
                continue
            known = values.get((rtype, key, raw), _MISSING)
            if known is _MISSING:
                fresh[key] = raw
                continue
            if out is data:
                out = dict(data)
            out[key] = known
        return out, fresh

    def remember(self, rtype: str, fresh: dict[str, bytes], validated: Any) -> None:
        for key, raw in fresh.items():
            value = getattr(validated, key, None)
            if value is not None:
                self._values[(rtype, key, raw)] = value


_MISSING = object()

# ----- lab Observations that can never be read (only with the `as_of` hint) --------------------------
# Elements a skippable lab may have after `read_elements`: anything else is validated as usual.
_SKIPPABLE_LAB_ELEMENTS = frozenset(
    {"resourceType", "id", "status", "code", "effectiveDateTime", "valueQuantity", "referenceRange"}
)
_STRICT_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,6})?(?:Z|[+-](\d{2}):(\d{2})))?$"
)
_FHIR_CODE = re.compile(r"^[^\s]+( [^\s]+)*$")
_FHIR_URI = re.compile(r"^\S+$")
_FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
_SIMPLE_QUANTITY_KEYS = frozenset({"value", "unit", "system", "code"})
_QUANTITY_KEYS = _SIMPLE_QUANTITY_KEYS | {"comparator"}


@dataclass(frozen=True)
class _LabWindow:
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

    @classmethod
    def build(cls, knowledge: Knowledge, as_of: date) -> _LabWindow:
        # Imported here: extraction imports this module. One source of truth for kinds and units.
        from cds_service.clinical.dates import add_months  # noqa: PLC0415
        from cds_service.clinical.extract_observations import (  # noqa: PLC0415
            _LAB_KINDS,
            _WANTED_KINDS,
            _lab_factor,
        )

        start = add_months(as_of, -knowledge.w.lab_lookback_months)
        return cls(knowledge, start, as_of, frozenset(_WANTED_KINDS), frozenset(_LAB_KINDS), _lab_factor)

    def never_read(self, resource: dict[str, Any]) -> bool:
        if relevance.has_modifier_extension(resource) or resource.get("resourceType") != "Observation":
            return False
        for key in resource:
            if key not in _SKIPPABLE_LAB_ELEMENTS and key in relevance.READ_ELEMENTS["Observation"]:
                return False
        day = _strict_day(resource.get("effectiveDateTime"))
        if day is None or self.start <= day <= self.end:
            return False
        kind = self._lab_kind(resource.get("code"))
        if kind is None or not _valid_id(resource.get("id")) or resource.get("status") not in _FINAL_STATUSES:
            return False
        if not _valid_concept(resource.get("code")) or not _valid_ranges(resource.get("referenceRange")):
            return False
        quantity = resource.get("valueQuantity")
        if quantity is None:
            return "valueQuantity" not in resource
        if not _valid_quantity(quantity, simple=False):
            return False
        units = [str(u).strip() for u in (quantity.get("code"), quantity.get("unit")) if u]
        return "value" not in quantity or self.lab_factor(kind, units) is not None

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


def _valid_id(value: Any) -> bool:
    return value is None or is_fhir_id(value)


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


def parse_resources(
    raw: Iterable[dict[str, Any]], knowledge: Knowledge, *, as_of: date | None = None
) -> ParsedResources:
    """Filter, then validate, raw resources, Bundle entries (`{fullUrl, resource}`) or Bundles.

    `as_of` (optional, the evaluation date) lets lab Observations that can never be read be skipped
    unvalidated: dated outside the lab look-back window, surely valid, and with a recognised unit,
    so that validating them could yield neither a lab value, nor a caveat, nor an unreadable count
    (see `_LabWindow`). Without it every relevant entry is validated.
    """
    items = _unique_items(raw)
    reuse = _Reuse()
    window = _LabWindow.build(knowledge, as_of) if as_of is not None else None
    referenced = relevance.ReferencedIndex.build(
        (full_url, resource) for _, full_url, resource, rtype in items if rtype in _REFERENCED_TYPES
    )
    checker = relevance.RelevanceChecker(knowledge, referenced)
    ignored: dict[str, int] = defaultdict(int)
    any_medication = False
    wanted: list[_Entry] = []
    ignored_by_status, is_relevant = relevance.ignored_by_status, checker.is_relevant
    for index, full_url, resource, rtype in items:
        if rtype in _REFERENCED_TYPES:
            continue
        if rtype in MEDICATION_USE_TYPES and resource.get("status") != "entered-in-error":
            any_medication = True
        if ignored_by_status(resource):
            ignored[rtype] += 1
            continue
        if is_relevant(resource):
            if window is not None and rtype == "Observation" and window.never_read(resource):
                continue
            wanted.append(_Entry(index, full_url, resource, reuse))
    for index, full_url, resource, rtype in items:
        if rtype in _REFERENCED_TYPES:
            entry = _Entry(index, full_url, resource)
            if _is_wanted_reference(entry, checker):
                wanted.append(entry)
    return _validated(wanted, any_medication, dict(ignored), checker)


def _is_wanted_reference(entry: _Entry, checker: relevance.RelevanceChecker) -> bool:
    if entry.resource_type not in _REFERENCED_TYPES or relevance.ignored_by_status(entry.resource):
        return False
    keys = _lookup_keys(entry)
    return any(key in checker.wanted_references for key in keys)


def _lookup_keys(entry: _Entry) -> list[str]:
    keys = []
    rid = entry.resource.get("id")
    if isinstance(rid, str) and rid:
        keys.append(f"{entry.resource_type}/{rid}")
    if entry.full_url:
        keys.append(entry.full_url)
    return keys


def _flatten(raw: Iterable[Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    for item in raw:
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "Bundle":
            for entry in item.get("entry") or ():
                yield from _entry_resource(entry)
        elif "resourceType" not in item and "resource" in item:
            yield from _entry_resource(item)
        else:
            yield None, item


def _entry_resource(entry: Any) -> Iterator[tuple[str | None, dict[str, Any]]]:
    if not isinstance(entry, dict):
        return
    resource = entry.get("resource")
    search = entry.get("search")
    if isinstance(search, dict) and search.get("mode") == "outcome":
        return
    if isinstance(resource, dict):
        full_url = entry.get("fullUrl")
        yield (full_url if isinstance(full_url, str) else None), resource


def _unique_items(raw: Iterable[Any]) -> list[tuple[int, str | None, dict[str, Any], str]]:
    """(position, fullUrl, resource, type) of the kept types, first occurrence of each (type, id).

    The position counts every resource `_flatten` yields (kept type or not), as log lines report it.
    """
    seen: set[tuple[str, str]] = set()
    out: list[tuple[int, str | None, dict[str, Any], str]] = []
    models = _MODELS
    for index, (full_url, resource) in enumerate(_flatten(raw)):
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or rtype not in models:
            continue
        rid = resource.get("id")
        if isinstance(rid, str) and rid:
            key = (rtype, rid)
            if key in seen:
                continue
            seen.add(key)
        out.append((index, full_url, resource, rtype))
    return out


def _validated(
    wanted: list[_Entry], any_medication: bool, ignored: dict[str, int], checker: relevance.RelevanceChecker
) -> ParsedResources:
    lists: dict[str, list[Any]] = defaultdict(list)
    medications: dict[str, Medication] = {}
    devices: dict[str, Device] = {}
    unreadable: dict[str, int] = defaultdict(int)
    for entry in wanted:
        rtype = entry.resource_type
        model = _validate_entry(entry)
        if model is None:
            unreadable[rtype] += 1
            continue
        if rtype in _REFERENCED_TYPES:
            target: dict[str, Any] = medications if rtype == "Medication" else devices
            for key in _lookup_keys(entry):
                target.setdefault(key, model)
        else:
            lists[_FIELD_OF_TYPE[rtype]].append(model)
    return ParsedResources(
        **{name: tuple(items) for name, items in lists.items()},
        medications=medications,
        devices=devices,
        any_medication_resource=any_medication,
        unreadable=dict(unreadable),
        ignored_by_status=ignored,
        unresolved_medication_references=checker.unresolved_medication_references,
        medications_named_other=checker.medications_named_other,
    )


def _validate_entry(entry: _Entry) -> Any | None:
    if relevance.has_modifier_extension(entry.resource):
        _LOG.warning("FHIR entry %d (%s) not read: modifierExtension", entry.index, entry.resource_type)
        return None
    model = _MODELS[entry.resource_type]
    data = _with_top_level_datetimes_fixed(relevance.read_elements(entry.resource))
    if entry.reuse is not None:
        prepared, fresh = entry.reuse.prepared(model, entry.resource_type, data)
        try:
            validated = model.model_validate(prepared)
        except Exception:  # noqa: S110 - validated again from the raw data below, as always
            pass
        else:
            entry.reuse.remember(entry.resource_type, fresh, validated)
            return validated
    for _ in range(_MAX_PATCH_ROUNDS):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            patched = _patched_copy(data, exc)
            if patched is None:
                _log_unreadable(entry, exc)
                return None
            data = patched
        except Exception as exc:  # one bad entry never fails the whole call
            _log_unreadable(entry, exc)
            return None
    _LOG.warning("FHIR entry %d (%s) could not be read: too many quirks", entry.index, entry.resource_type)
    return None


def _log_unreadable(entry: _Entry, exc: Exception) -> None:
    # Location and exception type only: the message of a ValidationError quotes the input value.
    _LOG.warning(
        "FHIR entry %d (%s) could not be read: %s", entry.index, entry.resource_type, type(exc).__name__
    )


def _patched_copy(data: dict[str, Any], exc: ValidationError) -> dict[str, Any] | None:
    """A copy of `data` with every tolerable quirk fixed, or None when an error is not tolerable."""
    patched = copy.deepcopy(data)
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(error["loc"])
        if not loc or not _patch_one(patched, loc, error["type"], error["msg"]):
            return None
    return patched


def _patch_one(data: dict[str, Any], loc: tuple[Any, ...], kind: str, message: str) -> bool:
    parent = _container_at(data, loc[:-1])
    key = loc[-1]
    if not isinstance(parent, dict) or not isinstance(key, str) or key not in parent:
        return False
    value = parent[key]
    if kind == "extra_forbidden":
        del parent[key]  # unknown element: ignored, as a lenient reader may
        return True
    if not isinstance(value, str):
        return False
    if not value.strip():
        del parent[key]  # FHIR forbids empty strings; an empty value carries no data
        return True
    if "Date" not in message and "Instant" not in message:
        return False
    fixed = _lenient_datetime(value, instant="Instant" in message)
    if fixed is None or fixed == value:
        return False
    parent[key] = fixed
    return True


def _container_at(data: Any, path: tuple[Any, ...]) -> Any:
    node = data
    for step in path:
        if isinstance(node, dict) and isinstance(step, str):
            node = node.get(step)
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            node = node[step]
        else:
            return None
    return node


def _with_top_level_datetimes_fixed(data: dict[str, Any]) -> dict[str, Any]:
    """Fix quirky dateTimes of top-level elements and Periods up front (saves a failed validation)."""
    for key, value in data.items():
        if isinstance(value, str) and key != "id":
            data[key] = _fixed_if_quirky(value, instant=key in _INSTANT_KEYS) or value
        elif key.endswith("Period") and isinstance(value, dict):
            data[key] = {
                k: (_fixed_if_quirky(v, instant=False) or v) if isinstance(v, str) else v
                for k, v in value.items()
            }
    return data


def _fixed_if_quirky(value: str, *, instant: bool) -> str | None:
    match = _DATETIME_QUIRK.match(value)
    if match is None:
        return None
    _, separator, _, seconds, offset = match.groups()
    if separator == "T" and seconds and offset and (offset == "Z" or ":" in offset):
        return None  # already a valid FHIR dateTime/instant
    return _lenient_datetime(value, instant=instant)


def _lenient_datetime(value: str, *, instant: bool) -> str | None:
    """A valid form of a quirky dateTime: the date part as written (an instant keeps its time)."""
    match = _DATETIME_QUIRK.match(value.strip())
    if match is None:
        return None
    day, _, hours_minutes, seconds, offset = match.groups()
    if not instant:
        return day
    zone = offset if offset and ":" in offset else "Z" if not offset else f"{offset[:3]}:{offset[3:]}"
    return f"{day}T{hours_minutes}{seconds or ':00'}{zone}"


def resolve_reference(reference: Any, contained: Any, lookup: Mapping[str, Any], kind: type) -> Any | None:
    """The resource a Reference points at: contained (`#id`), by fullUrl, or by `Type/id`."""
    target = getattr(reference, "reference", None)
    if not isinstance(target, str) or not target:
        return None
    if target.startswith("#"):
        for item in contained or ():
            if isinstance(item, kind) and getattr(item, "id", None) == target[1:]:
                return item
        return None
    found = lookup.get(target)
    if found is None:
        key = reference_key(target)
        found = lookup.get(key) if key else None
    return found if isinstance(found, kind) else None


def resolve_medication(resource: Any, parsed: ParsedResources) -> Medication | None:
    """The Medication of a medication resource's `medicationReference`, if it can be found."""
    found = resolve_reference(
        getattr(resource, "medicationReference", None), resource.contained, parsed.medications, Medication
    )
    return found if isinstance(found, Medication) else None


def resolve_device(observation: Observation, parsed: ParsedResources) -> Device | None:
    found = resolve_reference(observation.device, observation.contained, parsed.devices, Device)
    return found if isinstance(found, Device) else None
