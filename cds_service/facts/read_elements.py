"""The elements of each resource type the protocol reads: only they are validated and kept."""

from __future__ import annotations

from typing import Any

_MEDICATION_ELEMENTS = frozenset({"status", "medicationCodeableConcept", "medicationReference", "contained"})
# Only these elements are validated and kept (required elements included so that validation passes):
# validation cost grows with content, and nothing else is read downstream.
READ_ELEMENTS: dict[str, frozenset[str]] = {
    "Patient": frozenset({"birthDate", "gender", "deceasedBoolean", "deceasedDateTime"}),
    "Observation": frozenset(
        {
            "status",
            "code",
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "valueQuantity",
            "valueString",
            "bodySite",
            "device",
            "performer",
            "component",
            "referenceRange",
            "contained",
        }
    ),
    "Condition": frozenset(
        {
            "subject",
            "code",
            "bodySite",  # names a vertebral level (protocol §3c undated history)
            "clinicalStatus",
            "verificationStatus",
            "onsetDateTime",
            "onsetPeriod",
            "recordedDate",
        }
    ),
    "Procedure": frozenset({"subject", "status", "code", "bodySite", "performedDateTime", "performedPeriod"}),
    "AllergyIntolerance": frozenset(
        {
            "patient",
            "code",
            "clinicalStatus",
            "verificationStatus",
            "reaction",
            "onsetDateTime",
            "onsetPeriod",
            "recordedDate",
        }
    ),
    "MedicationStatement": _MEDICATION_ELEMENTS
    | {"subject", "effectiveDateTime", "effectivePeriod", "dosage"},
    "MedicationRequest": _MEDICATION_ELEMENTS
    | {"subject", "intent", "authoredOn", "dosageInstruction", "dispenseRequest"},
    "MedicationAdministration": _MEDICATION_ELEMENTS
    | {"subject", "effectiveDateTime", "effectivePeriod", "dosage"},
    "MedicationDispense": _MEDICATION_ELEMENTS
    | {"whenHandedOver", "whenPrepared", "daysSupply", "quantity", "dosageInstruction"},
    "DiagnosticReport": frozenset(
        {"status", "code", "effectiveDateTime", "effectivePeriod", "issued", "result"}
    ),
    "Medication": frozenset({"status", "code", "form", "ingredient"}),
    "Device": frozenset(
        {"status", "identifier", "serialNumber", "deviceName", "manufacturer", "modelNumber"}
    ),
}
_ALWAYS_KEPT = frozenset({"resourceType", "id"})
_KEPT = {rtype: elements | _ALWAYS_KEPT for rtype, elements in READ_ELEMENTS.items()}


def read_elements(resource: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of `resource` with only the elements the protocol reads."""
    kept = _KEPT.get(str(resource.get("resourceType")), _ALWAYS_KEPT)
    return {key: value for key, value in resource.items() if key in kept}


def has_modifier_extension(resource: dict[str, Any]) -> bool:
    """A root `modifierExtension` changes the resource's meaning: it must not be read as if absent."""
    return bool(resource.get("modifierExtension"))
