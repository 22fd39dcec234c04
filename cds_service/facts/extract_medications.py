"""Medication{Administration,Dispense,Statement,Request} -> `MedicationRecord` (protocol §2, §4).

The drug is identified by its codes (the most specific table row: a product with a strength before
an ingredient or ATC class), else by an ingredient or brand name in its text (`matched_by_name`).
Coverage is not computed here: it depends on `as_of` (exposure step).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from cds_service.facts.code_match import ingredient_in_text, ingredients_in_text, medication_roles
from cds_service.facts.extract_common import (
    Coding3,
    PerCall,
    calendar_date,
    codings,
    concept_texts,
    decimal_text,
    first_text,
)
from cds_service.facts.extract_strength import doses_in_text, strength_class, structured_doses
from cds_service.facts.parsed_resources import ParsedResources, resolve_medication
from cds_service.facts.patient_record import MedicationRecord, MedicationRole, MedicationSource
from cds_service.knowledge.code_tables import MedicationCode
from cds_service.knowledge.indexed import Knowledge
from cds_service.knowledge.schema import Dosing

_ROLES: dict[str, MedicationRole] = {
    "first_line_antiresorptive": "first_line",
    "anabolic": "anabolic",
    "oncology_dose": "oncology_dose",
    "other_bone_agent": "other_bone_agent",
    "supplement": "supplement",
}
_STATUSES: dict[MedicationSource, frozenset[str]] = {
    "administration": frozenset({"completed", "in-progress"}),
    "dispense": frozenset({"completed"}),
    # `stopped` / `on-hold` statements and `stopped` orders are past exposure (protocol §3c): kept, with
    # coverage ending at the stop (exposure.record_coverage), so prior courses and history never vanish.
    "statement": frozenset({"active", "completed", "unknown", "stopped", "on-hold"}),
    "request": frozenset({"active", "completed", "on-hold", "stopped"}),  # on-hold kept, visible in `status`
}
# Dated doses that count for oncology-by-interval (protocol §4): not order dates.
_DOSE_SOURCES = frozenset({"administration", "dispense", "statement"})
_ORDER_INTENTS = frozenset({"order", "original-order", "instance-order"})
_PEN_AGENTS = frozenset({"teriparatide", "abaloparatide"})
_PEN = re.compile(r"\bpens?\b", re.IGNORECASE)
_UNIT_DAYS = {
    "s": Decimal(1) / Decimal(86400),
    "min": Decimal(1) / Decimal(1440),
    "h": Decimal(1) / Decimal(24),
    "d": Decimal(1),
    "wk": Decimal(7),
    "mo": Decimal(365) / Decimal(12),
    "a": Decimal(365),
}
# Supply durations (daysSupply, expectedSupplyDuration): unit -> days.
_SUPPLY_DAYS = {
    "d": 1,
    "day": 1,
    "days": 1,
    "wk": 7,
    "week": 7,
    "weeks": 7,
    "mo": 30,
    "month": 30,
    "months": 30,
}


class _Drug(NamedTuple):
    agent: str
    entry: MedicationCode | None  # most specific table row, None when matched by name
    texts: list[str]  # text/displays of the drug (label first), for strength and pen words
    ingredient_strengths: list[Any]  # Medication.ingredient.strength ratios
    form_texts: list[str]


TextDoses = PerCall[tuple[Decimal, ...]]  # doses_in_text of (agent, text), each text read once per call


def extract_medications(parsed: ParsedResources, knowledge: Knowledge) -> tuple[MedicationRecord, ...]:
    records: list[MedicationRecord] = []
    doses_of_text: TextDoses = PerCall(lambda agent, text: tuple(doses_in_text(agent, text)))
    sources: tuple[tuple[MedicationSource, tuple[Any, ...]], ...] = (
        ("administration", parsed.medication_administrations),
        ("dispense", parsed.medication_dispenses),
        ("statement", parsed.medication_statements),
        ("request", parsed.medication_requests),
    )
    for source, resources in sources:
        for resource in resources:
            record = _record(source, resource, parsed, knowledge, doses_of_text)
            if record is not None:
                records.append(record)
    return tuple(oncology_by_interval(records, knowledge))


def oncology_by_interval(records: list[MedicationRecord], knowledge: Knowledge) -> list[MedicationRecord]:
    """Protocol §4: doses of one agent closer than `oncology_min_interval_days` are oncology use.

    The dose dates are the distinct dated doses (administration, dispense, statement effectiveDateTime)
    of records not already classed as oncology; when two are too close, every record of that agent
    whose strength is unknown or osteoporosis is re-classed as an oncology dose (fail safe: R2)."""
    flagged: set[str] = set()
    for agent, min_days in knowledge.model.oncology_min_interval_days.items():
        dates = sorted(
            {
                r.event_date
                for r in records
                if r.agent == agent
                and r.source in _DOSE_SOURCES
                and r.event_date
                and r.strength != "oncology"
            }
        )
        if any((later - earlier).days < min_days for earlier, later in itertools.pairwise(dates)):
            flagged.add(agent)
    if not flagged:
        return records
    return [
        replace(r, role="oncology_dose", strength="oncology")
        if r.agent in flagged and r.strength != "oncology"
        else r
        for r in records
    ]


def _record(
    source: MedicationSource,
    resource: Any,
    parsed: ParsedResources,
    knowledge: Knowledge,
    doses_of_text: TextDoses,
) -> MedicationRecord | None:
    if resource.status not in _STATUSES[source]:
        return None
    if source == "request" and resource.intent not in _ORDER_INTENTS:
        return None
    drug = identify_drug(resource, parsed, knowledge)
    if drug is None:
        return None
    dosages = _dosages(source, resource)
    doses = structured_doses(drug.agent, _dose_quantities(source, dosages), drug.ingredient_strengths)
    texts = drug.texts + [d.text for d in dosages if d.text]
    for text in texts:
        doses.extend(doses_of_text(drug.agent, text))
    dose = drug.entry.strength_mg if drug.entry and drug.entry.strength_mg is not None else _first(doses)
    dose_mg = decimal_text(dose) if dose is not None else None
    strength = strength_class(drug.agent, drug.entry, doses, texts, knowledge)
    role = _role(drug, knowledge)
    dosing = knowledge.model.dosing.get(drug.agent)
    return MedicationRecord(
        agent=drug.agent,
        role="oncology_dose" if strength == "oncology" else role,
        source=source,
        status=str(resource.status),
        resource_id=resource.id or "",
        **_source_fields(source, resource),
        interval_days=_interval_days(source, dosages, dose_mg, dosing),
        interval_months=dosing.months_per_dose if dosing else None,
        strength=strength,
        dose_text=f"{dose_mg} mg" if dose_mg is not None else "",
        per_pen=_is_pen(drug),
        matched_by_name=drug.entry is None,
        label=first_text(drug.texts) or (drug.entry.display if drug.entry is not None else ""),
    )


def _first(values: list[Decimal]) -> Decimal | None:
    return values[0] if values else None


def _role(drug: _Drug, knowledge: Knowledge) -> MedicationRole:
    raw = drug.entry.role if drug.entry is not None else medication_roles(knowledge).get(drug.agent, "")
    return _ROLES.get(raw, "other_bone_agent")


def _is_pen(drug: _Drug) -> bool:
    if drug.agent not in _PEN_AGENTS:
        return False
    form = drug.entry.form if drug.entry is not None else ""
    return any(_PEN.search(text) for text in [form, *drug.form_texts, *drug.texts])


# ----- identification -------------------------------------------------------------------------
def identify_drug(resource: Any, parsed: ParsedResources, knowledge: Knowledge) -> _Drug | None:
    """The agent of a medication resource: codes first (most specific row), else names."""
    concept = resource.medicationCodeableConcept
    medication = resolve_medication(resource, parsed) if concept is None else None
    if medication is not None:
        concept = medication.code
    coded = codings(concept) if concept is not None else []
    texts = concept_texts(concept, coded) if concept is not None else []
    reference = resource.medicationReference
    if reference is not None and reference.display:
        texts.append(reference.display)
    entry = most_specific_entry(coded, knowledge)
    agent = entry.ingredient if entry is not None else _named_agent(texts, knowledge)
    if agent is None:
        return None
    return _Drug(
        agent=agent,
        entry=entry,
        texts=texts,
        ingredient_strengths=[i.strength for i in medication.ingredient or () if i.strength]
        if medication is not None
        else [],
        form_texts=concept_texts(medication.form) if medication is not None else [],
    )


def most_specific_entry(coded: list[Coding3], knowledge: Knowledge) -> MedicationCode | None:
    """The table row of the codings with a strength, else a product, else an ingredient or ATC class."""
    best: MedicationCode | None = None
    for system, code, _ in coded:
        entry = knowledge.medications.get((system, code))
        if entry is not None and (best is None or _specificity(entry) > _specificity(best)):
            best = entry
    return best


def _specificity(entry: MedicationCode) -> int:
    if entry.strength_mg is not None:
        return 2
    form = entry.form.lower()
    return 0 if form.startswith("ingredient") or form.startswith("atc") else 1


def _named_agent(texts: list[str], knowledge: Knowledge) -> str | None:
    for text in texts:
        agent = ingredient_in_text(text, knowledge)
        if agent is not None:
            return agent
    return None


def agents_named(concepts: list[Any], knowledge: Knowledge) -> frozenset[str]:
    """Every agent a set of CodeableConcepts names, by table code or by name (allergies)."""
    agents: set[str] = set()
    for concept in concepts:
        for system, code, _ in codings(concept):
            entry = knowledge.medications.get((system, code))
            if entry is not None:
                agents.add(entry.ingredient)
        for text in concept_texts(concept):
            agents |= ingredients_in_text(text, knowledge)
    return frozenset(agents)


# ----- source-specific fields -----------------------------------------------------------------
def _dosages(source: MedicationSource, resource: Any) -> list[Any]:
    if source == "administration":
        return [resource.dosage] if resource.dosage is not None else []
    if source == "statement":
        return list(resource.dosage or ())
    return list(resource.dosageInstruction or ())


def _dose_quantities(source: MedicationSource, dosages: list[Any]) -> list[Any]:
    """MedicationAdministration.dosage.dose; the others' Dosage.doseAndRate.doseQuantity.

    Read by source: a FHIR model raises (costly) when asked for an element its type does not have."""
    if source == "administration":
        return [dosage.dose for dosage in dosages if dosage.dose is not None]
    return [
        dose_and_rate.doseQuantity
        for dosage in dosages
        for dose_and_rate in dosage.doseAndRate or ()
        if dose_and_rate.doseQuantity is not None
    ]


def _source_fields(source: MedicationSource, resource: Any) -> dict[str, Any]:
    if source == "administration":
        start = resource.effectivePeriod.start if resource.effectivePeriod is not None else None
        return {"event_date": calendar_date(resource.effectiveDateTime or start)}
    if source == "dispense":
        quantity = resource.quantity.value if resource.quantity is not None else None
        return {
            "event_date": calendar_date(resource.whenHandedOver or resource.whenPrepared),
            "days_supply": supply_days(resource.daysSupply),
            "quantity": quantity if isinstance(quantity, Decimal) else None,
        }
    if source == "statement":
        period = resource.effectivePeriod
        return {
            "event_date": calendar_date(resource.effectiveDateTime),
            "period_start": calendar_date(period.start) if period is not None else None,
            "period_end": calendar_date(period.end) if period is not None else None,
        }
    request = resource.dispenseRequest
    validity = request.validityPeriod if request is not None else None
    repeats = request.numberOfRepeatsAllowed if request is not None else None
    return {
        "event_date": calendar_date(resource.authoredOn),
        "days_supply": supply_days(request.expectedSupplyDuration) if request is not None else None,
        "repeats": int(repeats or 0),
        "intent": resource.intent,
        "period_start": calendar_date(validity.start) if validity is not None else None,
        "period_end": calendar_date(validity.end) if validity is not None else None,
    }


def supply_days(quantity: Any) -> int | None:
    """Days of a supply Quantity/Duration: d/day/days; wk x7; mo x30; no unit = days."""
    value = getattr(quantity, "value", None)
    if not isinstance(value, Decimal):
        return None
    unit = str(getattr(quantity, "code", None) or getattr(quantity, "unit", None) or "d").strip().lower()
    factor = _SUPPLY_DAYS.get(unit)
    if factor is None:
        return None
    return int((value * factor).to_integral_value(rounding=ROUND_HALF_UP))


def _interval_days(
    source: MedicationSource, dosages: list[Any], dose_mg: str | None, dosing: Dosing | None
) -> int | None:
    """Dosing interval: the timing, else the product strength's default, else the agent's default.

    `dose_mg`: the dose as `decimal_text` writes it. An administration's dosage has no timing."""
    if source != "administration":
        for dosage in dosages:
            days = timing_days(dosage.timing.repeat if dosage.timing is not None else None)
            if days is not None:
                return days
    if dosing is None:
        return None
    if dose_mg is not None and dose_mg in dosing.by_strength_mg:
        return dosing.by_strength_mg[dose_mg]
    return dosing.default_days


def timing_days(repeat: Any) -> int | None:
    """Days between doses of a Timing.repeat (period x unit / frequency), at least 1."""
    period = getattr(repeat, "period", None)
    unit = _UNIT_DAYS.get(str(getattr(repeat, "periodUnit", None) or ""))
    if not isinstance(period, Decimal) or unit is None or period <= 0:
        return None
    frequency = getattr(repeat, "frequency", None) or 1
    days = (period * unit / Decimal(frequency)).to_integral_value(rounding=ROUND_HALF_UP)
    return max(1, int(days))
