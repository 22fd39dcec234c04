"""The validated resources of one patient record, and the references between them (Medication, Device)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

from cds_service.facts.relevance import reference_key

MEDICATION_USE_TYPES = frozenset(
    {"MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"}
)


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
