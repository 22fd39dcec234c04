"""Meaning-preserving (and a few meaning-changing) transforms of a patient's FHIR record.

Each transform imitates a shape real EHRs send (protocol §3c, docs/cds-hooks-notes.md). A transform takes
a `Record` and a seeded `random.Random` and returns a NEW record; it never mutates its input.

Kinds:
- ``syntactic``: only the encoding changes (order, ids, paging, datetimes, noise, error twins). The whole
  decision object except `caveats` must stay equal, including `reasons`; caveats may not lose a line.
- ``shape``: the same facts in another real-world shape. The decision fields listed in
  `compare.DECIDING_FIELDS` must stay equal; `reasons` may word a value differently (e.g. a bound "<30"),
  and `caveats` may gain shape-specific lines ("identified by name", "adherence not verifiable").
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Literal

from tests.metamorphic.code_tables import (
    LOINC,
    SNOMED,
    condition_equivalents,
    medication_ingredients,
    observation_kinds,
)

Resource = dict[str, Any]
MEDICATION_USE = (
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationStatement",
    "MedicationRequest",
)
INJECTABLES = frozenset({"denosumab", "zoledronic_acid", "romosozumab"})
DXA_KINDS = frozenset({"t_score", "bmd", "z_score"})
EPIC_BASE = "https://fhir.epic.example/api/FHIR/R4"
EPIC_COMPONENT_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.2.768282"  # an Epic-style local component OID
PANEL_TEXT = "DXA BONE DENSITY STUDY"
ICD10CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"


@dataclass(frozen=True)
class Record:
    """A patient's record as an EHR holds it.

    `resources` are supplied (prefetch, offline Bundle); `server_only` exist only on the EHR's FHIR
    server (reachable by reference); `page_size` makes search results come in pages with `next` links.
    """

    resources: tuple[Resource, ...]
    server_only: tuple[Resource, ...] = ()
    page_size: int | None = None

    @classmethod
    def of(cls, resources: list[Resource]) -> Record:
        return cls(tuple(copy.deepcopy(resources)))

    def patient(self) -> Resource:
        return next(r for r in self.resources if r.get("resourceType") == "Patient")

    def all_resources(self) -> list[Resource]:
        return [*self.resources, *self.server_only]

    def with_resources(self, resources: list[Resource]) -> Record:
        return replace(self, resources=tuple(resources))


Kind = Literal["syntactic", "shape"]


@dataclass(frozen=True)
class Transform:
    name: str
    shape: str  # the real-world shape it imitates
    kind: Kind
    apply: Callable[[Record, random.Random], Record] = field(repr=False)
    offline: bool = True  # False: only the HTTP paths can see the difference (paging, server-only data)

    def __call__(self, record: Record, rng: random.Random) -> Record:
        return self.apply(
            Record(
                tuple(copy.deepcopy(list(record.resources))),
                tuple(copy.deepcopy(list(record.server_only))),
                record.page_size,
            ),
            rng,
        )


# ---------------------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------------------


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def observation_kind(resource: Resource) -> tuple[str, str] | None:
    kinds = observation_kinds()
    for coding in _codings(resource.get("code")):
        found = kinds.get((str(coding.get("system")), str(coding.get("code"))))
        if found:
            return found
    return None


def is_dxa_value(resource: Resource) -> bool:
    if resource.get("resourceType") != "Observation":
        return False
    kind = observation_kind(resource)
    return kind is not None and kind[0] in DXA_KINDS


def is_lab(resource: Resource) -> bool:
    if resource.get("resourceType") != "Observation":
        return False
    kind = observation_kind(resource)
    return kind is not None and kind[0] in {
        "egfr",
        "calcium",
        "albumin",
        "alkaline_phosphatase",
        "vitamin_d_25oh",
    }


def ingredient(resource: Resource) -> str | None:
    table = medication_ingredients()
    for coding in _codings(resource.get("medicationCodeableConcept")):
        found = table.get((str(coding.get("system")), str(coding.get("code"))))
        if found:
            return found
    return None


def _stable_id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:10]


def _effective_day(resource: Resource) -> str:
    value = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get("start") or ""
    return str(value)[:10]


def _medication_fields(resource: Resource) -> Resource:
    """The medication[x] element and any contained resources, for a resource recorded as another type."""
    names = ("medicationCodeableConcept", "medicationReference", "contained")
    return {name: resource[name] for name in names if name in resource}


def _patient_ref(record: Record) -> dict[str, str]:
    return {"reference": f"Patient/{record.patient()['id']}"}


def _medication_display(concept: dict[str, Any]) -> str:
    """The name an EHR shows for the product: the concept text (keeps the strength), else a display."""
    text = concept.get("text")
    if isinstance(text, str) and text:
        return text
    for coding in _codings(concept):
        if coding.get("display"):
            return str(coding["display"])
    return "medication"


# ---------------------------------------------------------------------------------------------------------
# Medication shapes
# ---------------------------------------------------------------------------------------------------------


def epic_medication_reference(record: Record, rng: random.Random) -> Record:
    """Epic: `medicationReference` with an absolute URL on Epic's server and a display; no Medication sent."""
    out = []
    for original in record.resources:
        resource = original
        concept = resource.get("medicationCodeableConcept")
        if resource.get("resourceType") in MEDICATION_USE and isinstance(concept, dict):
            resource = dict(resource)
            del resource["medicationCodeableConcept"]
            resource["medicationReference"] = {
                "reference": f"{EPIC_BASE}/Medication/e{_stable_id(str(resource.get('id')))}",
                "display": _medication_display(concept),
            }
        out.append(resource)
    return record.with_resources(out)


def contained_medication(record: Record, rng: random.Random) -> Record:
    """Oracle/Cerner and many exports: a contained Medication referenced as `#id`."""
    out = []
    for original in record.resources:
        resource = original
        concept = resource.get("medicationCodeableConcept")
        if resource.get("resourceType") in MEDICATION_USE and isinstance(concept, dict):
            resource = dict(resource)
            del resource["medicationCodeableConcept"]
            local = f"med{rng.randrange(1000)}"
            resource["contained"] = [
                *(resource.get("contained") or []),
                {"resourceType": "Medication", "id": local, "code": concept},
            ]
            resource["medicationReference"] = {"reference": f"#{local}"}
        out.append(resource)
    return record.with_resources(out)


def server_medication_reference(record: Record, rng: random.Random) -> Record:
    """A relative `Medication/<id>` reference; the Medication is only on the FHIR server (not prefetched)."""
    out, medications = [], []
    for original in record.resources:
        resource = original
        concept = resource.get("medicationCodeableConcept")
        if resource.get("resourceType") in MEDICATION_USE and isinstance(concept, dict):
            resource = dict(resource)
            del resource["medicationCodeableConcept"]
            med_id = f"med-{_stable_id(str(resource.get('id')))}"
            medications.append({"resourceType": "Medication", "id": med_id, "code": concept})
            resource["medicationReference"] = {"reference": f"Medication/{med_id}"}
        out.append(resource)
    return replace(record, resources=tuple(out), server_only=(*record.server_only, *medications))


def injection_as_statement(record: Record, rng: random.Random) -> Record:
    """An injection recorded as a MedicationStatement with `effectiveDateTime` (§3c doses as statements)."""
    out = []
    for original in record.resources:
        resource = original
        if (
            resource.get("resourceType") == "MedicationAdministration"
            and resource.get("status") == "completed"
            and ingredient(resource) in INJECTABLES
            and resource.get("effectiveDateTime")
        ):
            resource = {
                "resourceType": "MedicationStatement",
                "id": resource["id"],
                "status": "completed",
                **_medication_fields(resource),
                "subject": resource["subject"],
                "effectiveDateTime": resource["effectiveDateTime"],
                "dosage": [{"text": (resource.get("dosage") or {}).get("text", "")}],
            }
        out.append(resource)
    return record.with_resources(out)


def injection_as_dispense(record: Record, rng: random.Random) -> Record:
    """An injection recorded as a pharmacy dispense of one syringe/infusion on the day (§4 dispense row)."""
    out = []
    for original in record.resources:
        resource = original
        if (
            resource.get("resourceType") == "MedicationAdministration"
            and resource.get("status") == "completed"
            and ingredient(resource) in INJECTABLES
            and resource.get("effectiveDateTime")
        ):
            resource = {
                "resourceType": "MedicationDispense",
                "id": resource["id"],
                "status": "completed",
                **_medication_fields(resource),
                "subject": resource["subject"],
                "quantity": {"value": 1, "unit": "syringe"},
                "whenHandedOver": resource["effectiveDateTime"],
            }
        out.append(resource)
    return record.with_resources(out)


def statement_as_order(record: Record, rng: random.Random) -> Record:
    """A patient-reported period recorded as an order (active -> open order; completed -> validityPeriod)."""
    out = []
    for original in record.resources:
        resource = original
        period = resource.get("effectivePeriod")
        if (
            resource.get("resourceType") == "MedicationStatement"
            and resource.get("status") in ("active", "completed")
            and isinstance(period, dict)
            and period.get("start")
            and (resource["status"] == "completed") == bool(period.get("end"))
        ):
            order: Resource = {
                "resourceType": "MedicationRequest",
                "id": resource["id"],
                "status": resource["status"],
                "intent": "order",
                **_medication_fields(resource),
                "subject": resource["subject"],
                "authoredOn": period["start"],
                "dosageInstruction": resource.get("dosage") or [],
            }
            if period.get("end"):
                order["dispenseRequest"] = {"validityPeriod": dict(period)}
            resource = order
        out.append(resource)
    return record.with_resources(out)


def dispense_as_dispensed_order(record: Record, rng: random.Random) -> Record:
    """A dispense recorded as a completed order with its supply (expectedSupplyDuration = daysSupply)."""
    out = []
    for original in record.resources:
        resource = original
        days = (resource.get("daysSupply") or {}).get("value")
        if (
            resource.get("resourceType") == "MedicationDispense"
            and resource.get("status") == "completed"
            and days
        ):
            resource = {
                "resourceType": "MedicationRequest",
                "id": resource["id"],
                "status": "completed",
                "intent": "order",
                **_medication_fields(resource),
                "subject": resource["subject"],
                "authoredOn": resource["whenHandedOver"],
                "dosageInstruction": resource.get("dosageInstruction") or [],
                "dispenseRequest": {
                    "numberOfRepeatsAllowed": 0,
                    "expectedSupplyDuration": {
                        "value": days,
                        "unit": "days",
                        "system": "http://unitsofmeasure.org",
                        "code": "d",
                    },
                },
            }
        out.append(resource)
    return record.with_resources(out)


# ---------------------------------------------------------------------------------------------------------
# Observation shapes
# ---------------------------------------------------------------------------------------------------------


def epic_dxa_panel(record: Record, rng: random.Random) -> Record:
    """Epic: one panel Observation per scan, DXA values as components (local code beside LOINC, unit SD,
    `effectivePeriod`)."""
    scans: dict[tuple[str, str], list[Resource]] = {}
    rest: list[Resource] = []
    for original in record.resources:
        resource = original
        if is_dxa_value(resource) and resource.get("status") == "final" and "valueQuantity" in resource:
            device = str(
                (resource.get("device") or {}).get("display")
                or (resource.get("device") or {}).get("reference")
                or ""
            )
            scans.setdefault((_effective_day(resource), device), []).append(resource)
        else:
            rest.append(resource)
    panels = []
    for (day, _device), values in sorted(scans.items()):
        first = values[0]
        components = []
        for value in values:
            kind = observation_kind(value)
            quantity = dict(value["valueQuantity"])
            if kind and kind[0] in ("t_score", "z_score"):
                quantity = {"value": quantity["value"], "unit": "SD"}
            coding = [
                {
                    "system": EPIC_COMPONENT_SYSTEM,
                    "code": f"{_stable_id(str(c.get('code')))}",
                    "display": str(c.get("display", "")).upper(),
                }
                for c in _codings(value["code"])[:1]
            ] + _codings(value["code"])
            component: Resource = {
                "code": {"coding": coding, "text": value["code"].get("text")},
                "valueQuantity": quantity,
            }
            if "bodySite" in value:
                # Epic puts the site in the component code text; keep the coded site in the text too
                component["code"]["text"] = value["code"].get("text") or value["bodySite"].get("text")
            components.append(component)
        panel: Resource = {
            "resourceType": "Observation",
            "id": f"panel-{_stable_id(str(first['id']), day)}",
            "status": "final",
            "category": first.get("category") or [],
            "code": {
                "coding": [{"system": EPIC_COMPONENT_SYSTEM, "code": "DXA-PANEL", "display": PANEL_TEXT}],
                "text": PANEL_TEXT,
            },
            "subject": first["subject"],
            "effectivePeriod": {"start": f"{day}T09:05:00-05:00", "end": f"{day}T09:25:00-05:00"},
            "component": components,
        }
        if "device" in first:
            panel["device"] = first["device"]
        panels.append(panel)
    return record.with_resources([*rest, *panels])


def _value_string(kind: str, value: float) -> str:
    if kind == "egfr":
        if value < 30:
            return "<30"
        if value >= 60:
            return ">60"
    if kind == "vitamin_d_25oh" and value >= 30:
        return ">30"
    if kind == "vitamin_d_25oh" and value < 7:
        return "<7"
    return f"{value:g}"


def _with_unit(text: str, kind: str, quantity: dict[str, Any]) -> str:
    """A lab string carries its unit after the number, as interfaces write it ("9.4 mg/dL"): without it the
    unit of a calcium or ALP value would be unknown (and rightly not read)."""
    unit = quantity.get("unit") or quantity.get("code")
    if kind in {"t_score", "egfr"} or not unit:
        return text
    return f"{text} {unit}"


def values_as_strings(record: Record, rng: random.Random) -> Record:
    """Lab interfaces: numeric `valueString`s with their unit ("9.4 mg/dL") and bounds ("<30", ">60") that
    decide the same gates; numeric T-score strings ("-2.5")."""
    out = []
    for original in record.resources:
        resource = original
        quantity = resource.get("valueQuantity")
        kind = observation_kind(resource) if resource.get("resourceType") == "Observation" else None
        if isinstance(quantity, dict) and kind and (kind[0] == "t_score" or is_lab(resource)):
            resource = dict(resource)
            del resource["valueQuantity"]
            text = _value_string(kind[0], float(quantity["value"]))
            resource["valueString"] = _with_unit(text, kind[0], quantity)
        out.append(resource)
    return record.with_resources(out)


def lab_comparators(record: Record, rng: random.Random) -> Record:
    """`valueQuantity.comparator` bounds that decide the same gates (eGFR ">" 60 is >= 35, "<" 30 is < 30)."""
    out = []
    for original in record.resources:
        resource = original
        quantity = resource.get("valueQuantity")
        kind = observation_kind(resource) if is_lab(resource) else None
        if isinstance(quantity, dict) and kind and kind[0] in ("egfr", "vitamin_d_25oh"):
            value = float(quantity["value"])
            bound: tuple[str, float] | None = None
            if kind[0] == "egfr":
                bound = ("<", 30) if value < 30 else ((">", 60) if value >= 60 else None)
            elif value >= 30:
                bound = (">", 30)
            if bound is not None:
                resource = dict(resource)
                resource["valueQuantity"] = {**quantity, "comparator": bound[0], "value": bound[1]}
        out.append(resource)
    return record.with_resources(out)


# ---------------------------------------------------------------------------------------------------------
# Condition codes
# ---------------------------------------------------------------------------------------------------------


def equivalent_condition_codes(record: Record, rng: random.Random) -> Record:
    """Another coding system for the same concept (SNOMED CT <-> ICD-10-CM <-> WHO ICD-10), per the tables."""
    out = []
    for original in record.resources:
        resource = original
        if resource.get("resourceType") == "Condition":
            concept = resource.get("code") or {}
            new_codings = []
            for original_coding in _codings(concept):
                coding = original_coding
                choices = condition_equivalents(str(coding.get("system")), str(coding.get("code")))
                if choices:
                    system, code = rng.choice(choices)
                    coding = {"system": system, "code": code, "display": coding.get("display")}
                new_codings.append(coding)
            resource = {**resource, "code": {**concept, "coding": new_codings}}
        out.append(resource)
    return record.with_resources(out)


# ---------------------------------------------------------------------------------------------------------
# Duplicates, error twins, noise
# ---------------------------------------------------------------------------------------------------------


def duplicate_second_source(record: Record, rng: random.Random) -> Record:
    """The same measurement/statement twice: a transcribed DXA value without device (read by a radiologist),
    a duplicate lab from a second interface, a duplicate medication statement."""
    extra = []
    dxa = [r for r in record.resources if is_dxa_value(r)]
    labs = [r for r in record.resources if is_lab(r)]
    statements = [r for r in record.resources if r.get("resourceType") == "MedicationStatement"]
    if dxa:
        copy_dxa = copy.deepcopy(rng.choice(dxa))
        copy_dxa.pop("device", None)
        copy_dxa["performer"] = [{"reference": "Practitioner/reading-radiologist", "display": "Dr. Reader"}]
        extra.append({**copy_dxa, "id": f"{copy_dxa['id']}-transcribed"})
    if labs:
        copy_lab = copy.deepcopy(rng.choice(labs))
        copy_lab["identifier"] = [{"system": "urn:example:second-lis", "value": _stable_id(copy_lab["id"])}]
        extra.append({**copy_lab, "id": f"{copy_lab['id']}-lis2"})
    if statements:
        copy_statement = copy.deepcopy(rng.choice(statements))
        copy_statement["informationSource"] = _patient_ref(record)
        extra.append({**copy_statement, "id": f"{copy_statement['id']}-reported"})
    return record.with_resources([*record.resources, *extra])


def _conflicting_twin(resource: Resource) -> Resource | None:
    twin = copy.deepcopy(resource)
    twin["id"] = f"{resource['id']}-eie"
    rtype = resource.get("resourceType")
    if rtype == "Observation" and isinstance(resource.get("valueQuantity"), dict):
        value = float(resource["valueQuantity"]["value"])
        twin["valueQuantity"]["value"] = (
            round(value - 1.5, 2) if is_dxa_value(resource) else round(value * 0.2, 2)
        )
        twin["status"] = "entered-in-error"
        return twin
    if rtype == "Condition":
        twin["code"] = {
            "coding": [
                {"system": SNOMED, "code": "94222008", "display": "Secondary malignant neoplasm of bone"}
            ]
        }
        twin["verificationStatus"] = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "entered-in-error",
                }
            ]
        }
        return twin
    if rtype in MEDICATION_USE and "medicationCodeableConcept" in resource:
        twin["status"] = "entered-in-error"
        twin["medicationCodeableConcept"] = {
            **twin["medicationCodeableConcept"],
            "text": "denosumab 120 mg (Xgeva) SC every 4 weeks",
        }
        return twin
    return None


def entered_in_error_twins(record: Record, rng: random.Random) -> Record:
    """A corrected record: the wrong entry is kept with status `entered-in-error` beside the right one."""
    candidates = [r for r in record.resources if r.get("resourceType") != "Patient"]
    chosen = rng.sample(candidates, k=min(3, len(candidates)))
    twins = [t for t in (_conflicting_twin(r) for r in chosen) if t is not None]
    return record.with_resources([*record.resources, *twins])


def unrelated_noise(record: Record, rng: random.Random) -> Record:
    """A real chart: other conditions, labs, drugs, Encounters and Immunizations around the relevant data."""
    subject = _patient_ref(record)
    pid = record.patient()["id"]
    noise: list[Resource] = [
        {
            "resourceType": "Condition",
            "id": f"{pid}-noise-htn",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {
                "coding": [
                    {"system": ICD10CM_URI, "code": "I10", "display": "Essential (primary) hypertension"}
                ]
            },
            "subject": subject,
            "onsetDateTime": "2015-04-02",
        },
        {
            "resourceType": "Observation",
            "id": f"{pid}-noise-glucose",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {"system": LOINC, "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}
                ]
            },
            "subject": subject,
            "effectiveDateTime": "2025-03-01",
            "valueQuantity": {
                "value": 96,
                "unit": "mg/dL",
                "system": "http://unitsofmeasure.org",
                "code": "mg/dL",
            },
        },
        {
            "resourceType": "Encounter",
            "id": f"{pid}-noise-enc",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {"start": "2025-03-01T09:00:00Z", "end": "2025-03-01T09:30:00Z"},
        },
        {
            "resourceType": "Immunization",
            "id": f"{pid}-noise-imm",
            "status": "completed",
            "vaccineCode": {"text": "Influenza vaccine, seasonal"},
            "patient": subject,
            "occurrenceDateTime": "2024-10-15",
        },
    ]
    # An unrelated drug only where medication data already exist: in a record with none, any medication
    # resource changes R6 from INSUFFICIENT_DATA (medication_history) to NOT_ELIGIBLE_NO_FIRST_LINE.
    if any(r.get("resourceType") in MEDICATION_USE for r in record.resources):
        noise.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"{pid}-noise-amlodipine",
                "status": "active",
                "medicationCodeableConcept": {"text": "amlodipine 5 mg oral tablet once daily"},
                "subject": subject,
                "effectivePeriod": {"start": "2016-01-01"},
            }
        )
    rng.shuffle(noise)
    return record.with_resources([*record.resources, *noise])


# ---------------------------------------------------------------------------------------------------------
# Pure encoding
# ---------------------------------------------------------------------------------------------------------

_DATETIME_FIELDS = (
    "effectiveDateTime",
    "onsetDateTime",
    "authoredOn",
    "whenHandedOver",
    "recordedDate",
    "issued",
)
_TIMES = ("T23:40:00-05:00", "T00:20:00+09:00", "T12:00:00Z", "T07:30:00")  # the last one naive (no offset)


def _with_time(value: Any, rng: random.Random) -> Any:
    if isinstance(value, str) and len(value) == 10:
        return value + rng.choice(_TIMES)
    return value


def offset_datetimes(record: Record, rng: random.Random) -> Record:
    """Datetimes with offsets far from UTC, and naive local times, on the same calendar date as written."""
    out = []
    for original in record.resources:
        resource = original
        resource = copy.deepcopy(resource)
        for name in _DATETIME_FIELDS:
            if name in resource:
                resource[name] = _with_time(resource[name], rng)
        for name in ("effectivePeriod", "onsetPeriod", "period"):
            if isinstance(resource.get(name), dict):
                resource[name] = {k: _with_time(v, rng) for k, v in resource[name].items()}
        out.append(resource)
    return record.with_resources(out)


def shuffled_order(record: Record, rng: random.Random) -> Record:
    """Servers return entries in any order."""
    out = list(record.resources)
    rng.shuffle(out)
    return record.with_resources(out)


def _rename_references(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        renamed = {k: _rename_references(v, mapping) for k, v in value.items()}
        ref = renamed.get("reference")
        if isinstance(ref, str) and ref in mapping:
            renamed["reference"] = mapping[ref]
        return renamed
    if isinstance(value, list):
        return [_rename_references(v, mapping) for v in value]
    return value


def renamed_ids(record: Record, rng: random.Random) -> Record:
    """Other servers, other ids (Epic-style opaque ids), every reference kept consistent."""
    mapping: dict[str, str] = {}
    new_ids: dict[int, str] = {}
    for index, resource in enumerate(record.all_resources()):
        new_id = "e" + hashlib.sha256(f"{rng.random()}-{index}".encode()).hexdigest()[:16]
        new_ids[index] = new_id
        mapping[f"{resource['resourceType']}/{resource['id']}"] = f"{resource['resourceType']}/{new_id}"
    renamed = []
    for index, resource in enumerate(record.all_resources()):
        renamed.append({**_rename_references(resource, mapping), "id": new_ids[index]})
    count = len(record.resources)
    return replace(record, resources=tuple(renamed[:count]), server_only=tuple(renamed[count:]))


def paged_searches(record: Record, rng: random.Random) -> Record:
    """Search results in pages with `next` links (prefetch Bundles the service must complete)."""
    return replace(record, page_size=rng.choice((1, 2, 3)))


MEANING_PRESERVING: tuple[Transform, ...] = (
    Transform(
        "epic_medication_reference",
        "Epic medicationReference: absolute URL + display, Medication not supplied",
        "shape",
        epic_medication_reference,
    ),
    Transform(
        "contained_medication", "contained Medication referenced as #id", "shape", contained_medication
    ),
    Transform(
        "server_medication_reference",
        "relative Medication/<id> reference, Medication only on the FHIR server",
        "shape",
        server_medication_reference,
    ),
    Transform(
        "injection_as_statement",
        "injection date recorded as a MedicationStatement with effectiveDateTime",
        "shape",
        injection_as_statement,
    ),
    Transform(
        "injection_as_dispense",
        "injection recorded as a dispense of one unit on the day",
        "shape",
        injection_as_dispense,
    ),
    Transform(
        "statement_as_order",
        "a statement's period recorded as an order (active/completed)",
        "shape",
        statement_as_order,
    ),
    Transform(
        "dispense_as_dispensed_order",
        "a dispense recorded as a completed order with its supply",
        "shape",
        dispense_as_dispensed_order,
    ),
    Transform(
        "epic_dxa_panel",
        "Epic DXA panel: components, local codes beside LOINC, unit SD, effectivePeriod",
        "shape",
        epic_dxa_panel,
    ),
    Transform(
        "values_as_strings",
        "numeric valueString and bounds ('<30', '>60', '-2.5')",
        "shape",
        values_as_strings,
    ),
    Transform(
        "lab_comparators",
        "valueQuantity.comparator bounds that decide the same gate",
        "shape",
        lab_comparators,
    ),
    Transform(
        "equivalent_condition_codes",
        "SNOMED CT <-> ICD-10-CM <-> WHO ICD-10 (same concept in the tables)",
        "shape",
        equivalent_condition_codes,
    ),
    Transform(
        "duplicate_second_source",
        "duplicates: transcribed DXA without device, second lab feed, reported statement",
        "shape",
        duplicate_second_source,
    ),
    Transform(
        "offset_datetimes",
        "offset and naive datetimes on the same calendar date",
        "syntactic",
        offset_datetimes,
    ),
    Transform(
        "entered_in_error_twins",
        "entered-in-error twin with a conflicting value",
        "syntactic",
        entered_in_error_twins,
    ),
    Transform(
        "unrelated_noise",
        "unrelated conditions, labs, drugs, Encounters, Immunizations",
        "syntactic",
        unrelated_noise,
    ),
    Transform("shuffled_order", "entries in another order", "syntactic", shuffled_order),
    Transform("renamed_ids", "opaque ids, references kept consistent", "syntactic", renamed_ids),
    Transform(
        "paged_searches", "paged search Bundles with next links", "syntactic", paged_searches, offline=False
    ),
)
BY_NAME: dict[str, Transform] = {t.name: t for t in MEANING_PRESERVING}


def compose(transforms: list[Transform]) -> Transform:
    kind: Kind = "syntactic" if all(t.kind == "syntactic" for t in transforms) else "shape"

    def apply(record: Record, rng: random.Random) -> Record:
        for transform in transforms:
            record = transform(record, rng)
        return record

    return Transform(
        "+".join(t.name for t in transforms), "combined", kind, apply, all(t.offline for t in transforms)
    )


# ---------------------------------------------------------------------------------------------------------
# Meaning-changing transforms (the decision must change the way the protocol says)
# ---------------------------------------------------------------------------------------------------------


def drop_followup_dxa(record: Record) -> Record:
    """Keep only the earliest DXA scan date: no follow-up DXA remains."""
    days = sorted({_effective_day(r) for r in record.resources if is_dxa_value(r)})
    keep = days[:1]
    return record.with_resources(
        [r for r in record.resources if not is_dxa_value(r) or _effective_day(r) in keep]
    )


def add_condition(record: Record, coding: tuple[str, str, str], onset: date, suffix: str) -> Record:
    system, code, display = coding
    pid = record.patient()["id"]
    condition = {
        "resourceType": "Condition",
        "id": f"{pid}-{suffix}",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "verificationStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}
            ]
        },
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{pid}"},
        "onsetDateTime": onset.isoformat(),
    }
    return record.with_resources([*record.resources, condition])


def add_recent_mi(record: Record, as_of: date) -> Record:
    return add_condition(
        record, (SNOMED, "22298006", "Myocardial infarction"), as_of - timedelta(days=90), "recent-mi"
    )


def add_recent_hip_fracture(record: Record, as_of: date) -> Record:
    return add_condition(
        record,
        (ICD10CM_URI, "S72.001A", "Fracture of unspecified part of neck of right femur, initial encounter"),
        as_of - timedelta(days=180),
        "recent-hip-fx",
    )


def mark_deceased(record: Record, as_of: date) -> Record:
    out = []
    for original in record.resources:
        resource = original
        if resource.get("resourceType") == "Patient":
            resource = {k: v for k, v in resource.items() if not k.startswith("deceased")}
            resource["deceasedDateTime"] = (as_of - timedelta(days=30)).isoformat()
        out.append(resource)
    return record.with_resources(out)


def iter_names() -> Iterator[str]:
    yield from BY_NAME
