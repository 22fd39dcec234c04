"""Raw FHIR R4 JSON -> validated `fhir.resources.R4B` objects, filtered cheaply first.

Validating a resource with pydantic costs far more than reading its JSON, so every raw dict is
first filtered by resource type, by the protocol's "ignored everywhere" statuses (protocol §2) and
by relevance to the code tables. Only what passes is validated, entry by entry: a relevant entry
that still fails is dropped and counted, and logged by position, type and exception type only
(never a value: the data are PHI).

Only the elements the protocol reads are validated and kept (`read_elements.READ_ELEMENTS`): an
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
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
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

from cds_service.facts import relevance, triage
from cds_service.facts.fhir_dates import lenient_datetime, with_top_level_datetimes_fixed
from cds_service.facts.lab_window import LabWindow
from cds_service.facts.parsed_resources import ParsedResources
from cds_service.facts.read_elements import has_modifier_extension, read_elements
from cds_service.knowledge.indexed import Knowledge

_LOG = logging.getLogger(__name__)

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
_KEPT_TYPES = frozenset(_MODELS)
_FIELD_NAMES: dict[Any, frozenset[str]] = {model: frozenset(model.model_fields) for model in _MODELS.values()}
_REFERENCED_TYPES = triage.REFERENCED_TYPES
_MAX_PATCH_ROUNDS = 3


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
        fields = _FIELD_NAMES[model]
        values = self._values
        out = data
        fresh: dict[str, bytes] = {}
        for key, value in data.items():
            if not isinstance(value, (dict, list)) or key not in fields or key == "contained":
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


def parse_resources(
    raw: Iterable[dict[str, Any]],
    knowledge: Knowledge,
    *,
    as_of: date | None = None,
    patient_id: str | None = None,
) -> ParsedResources:
    """Filter, then validate, raw resources, Bundle entries (`{fullUrl, resource}`) or Bundles.

    `as_of` (optional, the evaluation date) lets lab Observations that can never be read be skipped
    unvalidated: dated outside the lab look-back window, surely valid, and with a recognised unit,
    so that validating them could yield neither a lab value, nor a caveat, nor an unreadable count
    (see `LabWindow`). Without it every relevant entry is validated.

    `patient_id` (optional) drops the top-level items provably about another patient first, in the same
    pass (the same decision as `patient_scope.scoped`).
    """
    collected = triage.collect_kept(raw, _KEPT_TYPES, patient_id)
    window = LabWindow.build(knowledge, as_of) if as_of is not None else None
    checker = relevance.RelevanceChecker(knowledge, collected.referenced)
    selected = triage.select_wanted(collected, checker, window)
    reuse = _Reuse()
    wanted = [
        _Entry(index, full_url, resource, reuse if reusable else None)
        for (index, full_url, resource, _), reusable in selected.wanted
    ]
    return _validated(wanted, selected.any_medication, selected.ignored, checker)


def _lookup_keys(entry: _Entry) -> list[str]:
    return triage.lookup_keys((entry.index, entry.full_url, entry.resource, entry.resource_type))


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
    if has_modifier_extension(entry.resource):
        _LOG.warning("FHIR entry %d (%s) not read: modifierExtension", entry.index, entry.resource_type)
        return None
    model = _MODELS[entry.resource_type]
    data = with_top_level_datetimes_fixed(read_elements(entry.resource))
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
    fixed = lenient_datetime(value, instant="Instant" in message)
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
